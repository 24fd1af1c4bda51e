"""Bad input an outside audit tried: each gets one line on stderr, exit code 2, before any weights load."""
from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

import halluc
from halluc.cli import app
from halluc.errors import HallucError


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    import re

    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(path)
    return str(path)


@pytest.mark.parametrize("extra,pattern", [
    (["--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
    (["--num-beams", "0"], "num_beams must be >= 1"),
    (["--top-p", "1.5"], r"top_p must be in \(0, 1\]"),
    (["--dtype", "float8"], "unknown dtype 'float8'"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--method", "opera", "--do-sample"], "method 'opera' supports greedy, beam decoding, not sample"),
])
def test_generate_refuses_bad_settings_before_loading(monkeypatch, image, extra, pattern):
    import halluc.api.core  # noqa: F401  (the module whose load a CLI call resolves)
    from halluc import api

    if "--device" in extra and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(api.core, "load", lambda *a, **k: pytest.fail("weights loaded before the check"))
    one_line_error(invoke("generate", "--model", "tiny-llava", "--image", image, "--prompt", "hi", *extra), pattern)


def test_an_explicit_dtype_applies_to_offline_models():
    import torch

    assert halluc.load("tiny-llava", dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(HallucError, match="unknown dtype 'float8'"):
        halluc.load("toy-llava", dtype="float8")


def test_a_missing_model_directory_is_named(image):
    one_line_error(invoke("generate", "--model", "/nonexistent/dir", "--image", image, "--prompt", "hi"),
                   "model directory not found: /nonexistent/dir")


def test_a_prompt_that_is_not_text_says_so(image):
    with pytest.raises(HallucError, match="a prompt must be a string, got int"):
        halluc.generate(halluc.load("tiny-llava"), [image], [5])
    with pytest.raises(HallucError, match="max_new_tokens must be an integer, got 2.5"):
        halluc.generate(halluc.load("tiny-llava"), [image], ["hi"], max_new_tokens=2.5)


def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 x 64 is then over twice the limit
    one_line_error(invoke("generate", "--model", "tiny-llava", "--image", str(path), "--prompt", "hi"),
                   "too large to decode safely")
    with pytest.raises(HallucError, match="too large to decode safely"):
        halluc.generate(halluc.load("tiny-llava"), [str(path)], ["hi"])


def test_the_models_function_is_callable_after_the_models_layer_is_imported():
    import halluc.modeling.loading  # noqa: F401  (a submodule import must not shadow halluc.models())

    assert any(row["alias"] == "toy-llava" for row in halluc.models())


def test_help_keeps_its_default_texts():
    result = invoke("run", "--help")
    assert "[default: toy-llava on the toy world]" in " ".join(result.output.split())


@pytest.mark.parametrize("args,pattern", [
    (["world", "train", "--steps", "0"], "--steps must be >= 1"),
    (["world", "generate-data", "--n-images", "0", "--out", "x"], "--n-images must be >= 1"),
])
def test_world_commands_refuse_bad_values_at_once(args, pattern):
    one_line_error(invoke(*args), pattern)


def test_out_that_is_a_file_is_one_line(tmp_path):
    file = tmp_path / "f"
    file.write_text("x")
    one_line_error(invoke("world", "generate-data", "--out", str(file / "sub"), "--n-images", "1"),
                   "is a file, not a directory")
    one_line_error(invoke("run", "--limit", "1", "--out", str(file)), "is a file, not a directory")


def test_a_full_disk_in_any_command_is_one_line(tmp_path, monkeypatch):
    import errno

    from halluc.world import coco

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "w" / "instances.json"))

    monkeypatch.setattr(coco, "generate_world", full)
    one_line_error(invoke("world", "generate-data", "--out", str(tmp_path / "w"), "--n-images", "1"),
                   "cannot write .*instances.json: No space left on device")


def test_an_unreachable_hub_fails_fast_in_one_line(tmp_path, monkeypatch, image):
    import socket
    import time

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.monotonic()
    result = invoke("generate", "--model", "llava", "--image", image, "--prompt", "hi")
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("loading")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "neither in the local Hugging Face cache nor downloadable here" in lines[0]
    assert time.monotonic() - start < 10  # no retries


@pytest.mark.parametrize("args,pattern", [
    (["models", "--bogus"], "No such option: --bogus"),
    (["methods", "--verbose=3"], "does not take a value"),
    (["data", "fetch"], "Missing argument 'benchmark'"),
    (["data", "where", "--x"], "No such option: --x"),
    (["world", "train", "--steps", "abc"], "Invalid value for '--steps'"),
    (["score", "pope", "--questions"], "requires an argument"),
])
def test_every_command_gives_one_line_for_a_malformed_option(args, pattern):
    one_line_error(invoke(*args), pattern)
