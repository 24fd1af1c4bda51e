"""`halluc run`'s leaderboard carries the paired-bootstrap intervals that `halluc report` computes: its
legend promises a star where the 95% interval of Δ vs vanilla excludes 0, and rows now earn it.

A method that answers "No" to every POPE question drops F1 far below vanilla's on any sample, so its
star does not depend on what toy-llava happens to answer on a few questions.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

from halluc.cli import app
from halluc.interventions import Method, register
from halluc.interventions.registry import unregister

LEGEND = "* 95% interval of Δ vs vanilla excludes 0"


@dataclass(frozen=True)
class AnswerNo(Method):
    """Test-only: every generated token is "No", then the end of the answer."""

    name = "test-answer-no"
    kind = "decoding"

    def logits_processors(self, session):
        tokenizer = session.processor.tokenizer
        allowed = [tokenizer.convert_tokens_to_ids("No"), tokenizer.eos_token_id]

        def only_no(input_ids, scores):
            step = input_ids.shape[1] - session.inputs["input_ids"].shape[1]
            keep = torch.full_like(scores, -torch.inf)
            keep[:, allowed[min(step, 1)]] = 0.0
            return scores + keep

        return [only_no]


@pytest.fixture(scope="module", autouse=True)
def answer_no():
    """Registered only while this module's tests run (other tests list every registered method)."""
    register(AnswerNo)
    yield
    unregister(AnswerNo.name)


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    """The toy world's benchmarks, rendered once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HALLUC_DATA", str(tmp_path_factory.mktemp("data")))
        patch.setenv("HALLUC_PROGRESS", "0")
        yield


@pytest.fixture()
def world(data_home, tmp_path):
    return tmp_path


def run(out, *extra):
    args = ["run", "--benchmark", "pope", "--limit", "6", "--method", AnswerNo.name, "--out", str(out), *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def row(stdout: str, method: str) -> list[str]:
    return next(line.split() for line in stdout.splitlines() if line.split() and line.split()[0] == method)


def test_the_run_leaderboard_stars_what_the_report_stars(world):
    out = world / "run"
    printed = run(out, "--bootstrap", "200")
    assert row(printed, AnswerNo.name)[2].endswith("*") and LEGEND in printed   # Δ F1 mean: its interval < 0
    report = CliRunner().invoke(app, ["report", str(out), "--bootstrap", "200"])
    assert report.exit_code == 0, report.output
    assert report.stdout == printed                                    # the same intervals, the same stars
    assert run(out, "--bootstrap", "200", "--resume") == printed       # re-printing a finished run, too
    unstarred = run(out, "--bootstrap", "0", "--resume")               # no intervals: no star, no legend
    assert "*" not in unstarred and LEGEND not in unstarred and "sorted by F1 (higher is better)" in unstarred
    assert row(unstarred, AnswerNo.name)[2] == row(printed, AnswerNo.name)[2].rstrip("*")
