import pytest

from halluc.cli.common import parse_method_params, parse_value
from halluc.errors import HallucError


def test_parse_value_types():
    assert parse_value("2") == 2 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("paper") == "paper"


def test_parse_method_params_both_forms():
    params = parse_method_params(["--alpha", "2", "--vcd.beta=0.1", "--noise-step", "500"], ["gamma=1.1"])
    assert params == {"alpha": 2, "vcd.beta": 0.1, "noise_step": 500, "gamma": 1.1}


@pytest.mark.parametrize("extra,pairs,message", [
    (["--alpha"], [], "needs a value"),
    (["stray"], [], "unexpected argument 'stray'"),
    ([], ["alpha"], "expects NAME=VALUE"),
])
def test_parse_method_params_errors(extra, pairs, message):
    with pytest.raises(HallucError, match=message):
        parse_method_params(extra, pairs)
