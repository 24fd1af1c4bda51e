"""AMBER: the official evaluator's rules worked by hand, and a regression on the real files."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from halluc.benchmarks.amber import scoring as amber
from halluc.benchmarks.spec import benchmark_spec
from halluc.cli.score import score_app
from halluc.errors import HallucError
from tests.conftest import SHARED_DATA

AMBER_DIR = SHARED_DATA / "amber"
CAPTIONS = SHARED_DATA / "chair" / "captions" / "llava15_7b_greedy_512.jsonl"

ASSOCIATION = {"forest": ("tree", "bush"), "tree": ("forest",), "dog": (), "cat": (), "grass": ("ground",),
               "ground": ("floor",), "floor": (), "bush": (), "sky": (), "light": ()}
ITEM = {"id": 1, "type": "generative", "truth": ["forest", "tree", "dog"], "hallu": ["cat", "ground"]}


def _data(**items):
    annotations = {1: ITEM, 2: {"id": 2, "type": "discriminative-hallucination", "truth": "no"},
                   3: {"id": 3, "type": "discriminative-attribute-number", "truth": "yes"},
                   4: {"id": 4, "type": "relation", "truth": "no"}}
    return amber.AmberData(annotations, ASSOCIATION, ("light",), {})


def test_description_rules_by_hand():
    data = _data()
    check = amber.check_description(
        "Two trees and a dog on the floor. The light is on a cat. Dog sits.", ITEM, data,
        amber.offline_extractor(data.vocabulary))
    # nouns: tree (an association of forest, listed first: covers forest, not tree), dog (truth),
    # floor (no truth word nor association: hallucinated; an association of the hallu word ground: Cog),
    # light (safe word), cat (hallu: Cog, and hallucinated); "Dog" is capitalised, which the official
    # lemmatiser never matches.
    assert (check.nouns, check.hallucinated) == (5, 2)
    assert (check.covered, check.truth) == (2, 3)          # forest (via tree) and dog; tree itself not
    assert (check.cognitive, check.prone) == (2, 2)        # ground (via floor) and cat
    assert not check.clean
    metrics = amber.generative_metrics([check])
    assert metrics == {"chair": round(2 / 5.001 * 100, 1), "cover": round(2 / 3.001 * 100, 1),
                       "hal": round(100 - 0 / 1.001 * 100, 1), "cog": round(2 / 2.001 * 100, 1), "n": 1}


def test_yes_no_rules_by_hand():
    data = _data()
    answers = [amber.check_answer(r, data.annotations[i]) for i, r in ((2, "No"), (3, "yes"), (4, "Yes"))]
    assert [a.said for a in answers] == ["No", None, "Yes"]            # only exactly "Yes"/"No" counts
    out = amber.discriminative_metrics(answers)
    assert out["accuracy"] == round(1 / 3.001 * 100, 1) and out["unparsed"] == 1
    assert out["precision"] == round(1 / 1.001 * 100, 1) and out["recall"] == round(1 / 2.001 * 100, 1)
    p, r = out["precision"] / 100, out["recall"] / 100
    assert out["f1"] == round(2 * p * r / (p + r + 0.0001) * 100, 1)
    assert out["existence_f1"] == round(2 * 0.999 * 0.999 / (0.999 + 0.999 + 0.001) * 100, 1)  # existence eps
    assert out["attribute_accuracy"] == round(0 / 1.003 * 100, 1)    # three counters: denominators 0.003
    lenient = amber.check_answer("yes", data.annotations[3], lambda t: {"yes": True}.get(t))
    assert lenient.said == "Yes"


def test_amber_score_and_spec():
    assert amber.amber_score(chair=10.0, f1=80.0) == 85.0
    spec = benchmark_spec("amber")
    assert spec.headline == "amber_score" and spec.metric("chair").label == "AMBER CHAIR"
    assert spec.metric("cog").better == "lower" and spec.metric("cover").better == "higher"


def test_unknown_ids_and_extractor_choice():
    data = _data()
    with pytest.raises(HallucError, match="not AMBER items .first: 99."):
        amber.score({99: "Yes"}, data, amber.offline_extractor(data.vocabulary))
    with pytest.raises(HallucError, match="unknown AMBER extractor"):
        amber.get_extractor("spacy", data)
    if not amber.official_available():
        with pytest.raises(HallucError, match="--extractor offline"):
            amber.get_extractor("official", data)
        assert amber.get_extractor("auto", data).name == "offline"


# ---------------------------------------------------------------- real files (junyangwang0410/AMBER 534babf)

def fixture_responses() -> list[dict]:
    """Deterministic responses: a LLaVA-1.5 COCO caption plus truth words (and a hallu word every third
    item) for each description; yes/no answers right except every 6th, lower-case every 13th, with a
    tail every 17th (both invalid under the official rule)."""
    annotations = json.loads((AMBER_DIR / "annotations.json").read_text())
    captions = [json.loads(line)["caption"] for line in CAPTIONS.read_text().splitlines()]
    rows = []
    for item in annotations:
        i = item["id"]
        if item["type"] == "generative":
            truth, hallu = item["truth"], item["hallu"]
            text = captions[(i - 1) % len(captions)] + f" There are {truth[0]}s and a {truth[-1]} here."
            if i % 3 == 0:
                text += f" A {hallu[i % len(hallu)]} is visible, and the Sky is blue."
            rows.append({"id": i, "response": text})
        else:
            right = "Yes" if item["truth"] == "yes" else "No"
            response = ("No" if right == "Yes" else "Yes") if i % 6 == 0 else right
            response = response.lower() if i % 13 == 0 else response
            rows.append({"id": i, "response": response + (", it is." if i % 17 == 0 else "")})
    return rows


# Expected: the official inference.py (evaluation type a) on the same file, its NLTK calls stubbed
# with the offline extractor's nouns and spaCy's similarity with equality (the counting rules, not the
# extractor, are what this checks; the extractor gap is in the README).
OFFICIAL_GENERATIVE = {"chair": 71.6, "cover": 41.2, "hal": 99.6, "cog": 16.7}
OFFICIAL_YES_NO = {"accuracy": 72.4, "precision": 97.9, "recall": 66.4, "f1": 79.1,
                   "existence": (72.4, 100.0, 72.4, 83.9), "attribute": (72.4, 100.0, 57.9, 73.3),
                   "state": (72.2, 100.0, 57.8, 73.3), "number": (72.8, 100.0, 58.7, 74.0),
                   "action": (73.0, 100.0, 56.6, 72.3), "relation": (72.5, 78.1, 71.1, 74.4)}


def test_real_files_score_like_the_official_evaluator(tmp_path):
    if not AMBER_DIR.exists() or not CAPTIONS.exists():
        pytest.skip("shared AMBER / CHAIR data not available")
    path = tmp_path / "responses.json"
    path.write_text(json.dumps(fixture_responses()))
    result = CliRunner().invoke(score_app, ["amber", "--answers", str(path), "--data", str(AMBER_DIR),
                                            "--extractor", "offline", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["extractor"] == "offline"
    assert {k: out["generative"][k] for k in OFFICIAL_GENERATIVE} == OFFICIAL_GENERATIVE
    yes_no = out["discriminative"]
    assert {k: yes_no[k] for k in ("accuracy", "precision", "recall", "f1")} == {
        k: OFFICIAL_YES_NO[k] for k in ("accuracy", "precision", "recall", "f1")}
    for part in ("existence", "attribute", "state", "number", "action", "relation"):
        got = tuple(yes_no[f"{part}_{k}"] for k in ("accuracy", "precision", "recall", "f1"))
        assert got == OFFICIAL_YES_NO[part], part
    assert (out["generative"]["n"], yes_no["n"]) == (1004, 14216)
    assert out["amber_score"] == pytest.approx((100 - 71.6 + 79.1) / 2)
    table = CliRunner().invoke(score_app, ["amber", "--answers", str(path), "--data", str(AMBER_DIR),
                                           "--extractor", "offline"])
    assert table.exit_code == 0 and "AMBER Score" in table.stdout


def test_real_discriminative_subset_and_lenient_parser(tmp_path):
    if not AMBER_DIR.exists():
        pytest.skip("shared AMBER data not available")
    rows = [{"id": r["id"], "response": "Yes, it is." if r["truth"] == "yes" else "No."}
            for r in json.loads((AMBER_DIR / "annotations.json").read_text()) if r["id"] > 1004]
    path = tmp_path / "yes_no.json"
    path.write_text(json.dumps(rows))
    args = ["amber", "--answers", str(path), "--data", str(AMBER_DIR), "--json"]
    strict = json.loads(CliRunner().invoke(score_app, args).stdout)
    assert "generative" not in strict and strict["discriminative"]["unparsed"] == 14216
    lenient = json.loads(CliRunner().invoke(score_app, [*args, "--parser", "word"]).stdout)["discriminative"]
    assert lenient["accuracy"] == round(14216 / 14216.001 * 100, 1) and lenient["unparsed"] == 0
