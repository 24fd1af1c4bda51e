"""`halluc run` with no model: toy-llava on the toy world's POPE and CHAIR, vanilla and the toy methods."""
import json

from typer.testing import CliRunner

from halluc.cli import app
from halluc.cli.run import TOY_METHODS


def test_no_model_runs_the_toy_leaderboard(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLUC_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HALLUC_PROGRESS", "0")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--limit", "2", "--method", "vcd", "--method", "vhr", "--out", str(out)])
    assert result.exit_code == 0, result.output
    pope = json.loads((out / "pope" / "results.json").read_text())["rows"]
    chair = json.loads((out / "chair" / "results.json").read_text())["rows"]
    assert {(r["split"], r["method"]) for r in pope} == {(s, m) for s in ("random", "popular", "adversarial", "mean")
                                                          for m in ("none", "vcd", "vhr")}
    assert all(r["model"] == "toy-llava" and r["limit"] == 2 and 0 <= r["f1"] <= 100 for r in pope)
    assert {r["method"] for r in chair} == {"none", "vcd", "vhr"} and all("chair_i" in r for r in chair)
    assert "adversarial" in result.stdout and "CHAIR" in result.stdout  # one leaderboard per benchmark
    args = ["run", "--limit", "2", "--method", "vcd", "--method", "vhr", "--out", str(out)]
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "--resume" in again.output   # never overwrites a finished run
    resumed = CliRunner().invoke(app, [*args, "--resume"])       # vhr's tuple parameters survive the JSON
    assert resumed.exit_code == 0, resumed.output
    timing = {"seconds_per_sample", "tokens_per_second", "peak_memory_mb"}
    scores = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]   # noqa: E731
    assert scores(json.loads((out / "pope" / "results.json").read_text())["rows"]) == scores(pope)


def test_the_default_methods_are_registered():
    from halluc.interventions.registry import method_names

    assert len(TOY_METHODS) >= 5
    assert set(TOY_METHODS) <= set(method_names())
