"""Every method's per-step scores on every offline model equal the recorded ones (`tests/golden`).

A refactor must leave them unchanged; a deliberate fidelity fix re-records them
(`python -m tests.golden.record_scores`) in the same commit.
"""
import pytest
import torch

from tests.golden.record_scores import GOLDEN, params_for, run_case

GOLDEN_CASES = torch.load(GOLDEN) if GOLDEN.exists() else {}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_scores_equal_the_recorded_ones(case, tiny_models):
    model, method = case.split("/")
    lvlm = tiny_models(model)
    got = run_case(lvlm, method, params_for(lvlm, method))
    want = GOLDEN_CASES[case]
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(got[key], value, atol=2e-4, rtol=1e-4, msg=f"{case} {key}")
        else:
            assert (got[key] == value).all() if isinstance(value, torch.Tensor) else got[key] == value, f"{case} {key}"


def test_every_registered_method_is_recorded():
    import halluc

    recorded = {case.split("/")[1] for case in GOLDEN_CASES}
    assert {m["name"] for m in halluc.methods()} <= recorded | {"none"}
