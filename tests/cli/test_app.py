"""The CLI is a thin layer: right output streams, one-line errors, non-zero exits."""
import pytest
from typer.testing import CliRunner

from halluc.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_help_everywhere():
    for args in ([], ["models"], ["methods"], ["generate"]):
        result = invoke(*args, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_methods_lists_one_name_per_line():
    result = invoke("methods")
    assert result.exit_code == 0
    assert "none" in [line.split()[0] for line in result.stdout.splitlines()]


def test_methods_verbose_says_where_each_method_runs_and_why_not():
    """`methods -v` shows the support matrix: per method the families it runs on and each refusal's line."""
    from halluc import api

    out = invoke("methods", "-v").stdout
    assert "runs on: llava, llava_next, qwen2_vl" in out
    for row in api.support_matrix():
        if row["reason"] is not None:
            assert f"refused on {row['family']}: {row['reason']}" in out
    block = out[out.index("\ncca "):out.index("\ndamro ")]
    assert "runs on: llava\n" in block and "refused on gemma3: method 'cca' does not support gemma3 models" in block


def test_models_lists_aliases():
    first_column = [line.split()[0] for line in invoke("models").stdout.splitlines()]
    assert {"llava", "llava-next", "qwen2-vl", "qwen2.5-vl", "instructblip", "tiny-llava", "qwen3-vl", "internvl3",
            "llava-onevision", "gemma3", "smolvlm", "idefics3", "mistral3", "tiny-gemma3"} <= set(first_column)


def test_generate_prints_only_the_text_on_stdout(images):
    result = invoke("generate", "--model", "tiny-llava", "--image", str(images[0]), "--prompt", "What is it?",
                    "--max-new-tokens", "4")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1
    assert "loading tiny-llava" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--model", "lava"], "unknown model 'lava'"),
    (["--method", "vdc"], "unknown method 'vdc'"),
    (["--alpha", "2"], "method 'none' has no parameter 'alpha'"),
    (["--image", "/nonexistent/x.png"], "image not found: /nonexistent/x.png"),
    (["--prompt", " "], "empty prompt"),
])
def test_generate_bad_input_one_line_and_exit_2(images, args, message):
    base = {"--model": "tiny-llava", "--image": str(images[0]), "--prompt": "What?"}
    overrides = dict(zip(args[::2], args[1::2]))
    argv = ["generate"] + [x for k, v in {**base, **overrides}.items() for x in (k, v)]
    result = invoke(*argv)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_not_an_image_file(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("not really a png")
    result = invoke("generate", "--model", "tiny-llava", "--image", str(path), "--prompt", "What?")
    assert result.exit_code == 2 and f"not an image file (unrecognised format): {path}" in result.stderr


def test_generate_with_stacked_methods_and_dotted_params(images):
    result = invoke("generate", "--model", "tiny-llava", "--image", str(images[0]), "--prompt", "What?",
                    "--method", "vhr", "--method", "vcd", "--vcd.alpha=0.5", "--max-new-tokens", "3")
    assert result.exit_code == 0, result.output


def test_out_of_range_method_parameter(images):
    result = invoke("generate", "--model", "tiny-llava", "--image", str(images[0]), "--prompt", "What?",
                    "--method", "vcd", "--beta", "2")
    assert result.exit_code == 2
    assert "vcd: parameter 'beta' must be in [0.0, 1.0]; got 2" in result.stderr


def test_unsupported_family_is_refused(images):
    result = invoke("generate", "--model", "tiny-qwen2-vl", "--image", str(images[0]), "--prompt", "What?",
                    "--method", "damro")
    assert result.exit_code == 2 and "method 'damro' does not support qwen2_vl models" in result.stderr
