"""HallusionBench: the official aggregation worked by hand, and regressions on the released sample."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from halluc.benchmarks.hallusionbench import scoring as hb
from halluc.benchmarks.spec import benchmark_spec
from halluc.cli.score import score_app
from halluc.errors import HallucError
from tests.conftest import SHARED_DATA

QUESTIONS = SHARED_DATA / "hallusionbench" / "HallusionBench.json"
SAMPLE = SHARED_DATA / "hallusionbench" / "HallusionBench_result_sample.json"


def _q(category, sub, set_id, figure, qid, visual, yes):
    return hb.HBQuestion(category, sub, str(set_id), str(figure), str(qid), str(visual), "Is it?", yes,
                         None if visual == 0 else f"./{category}/{sub}/{set_id}_{figure}.png")


# A VD set: two questions on the original figure (0) and the edited one (1); a VS set: question 0
# without a figure, then on a figure.
SET = [_q("VD", "illusion", 0, 0, 0, 1, True), _q("VD", "illusion", 0, 0, 1, 1, False),
       _q("VD", "illusion", 0, 1, 0, 2, False), _q("VD", "illusion", 0, 1, 1, 2, True),
       _q("VS", "chart", 3, 0, 0, 0, True), _q("VS", "chart", 3, 1, 0, 1, False)]


def test_official_aggregation_by_hand():
    answers = {SET[0].key: "Yes", SET[1].key: "No", SET[2].key: "Yes", SET[3].key: "Yes",
               SET[4].key: "I am not sure.", SET[5].key: "No."}
    out = hb.score(SET, answers)
    # wrong: only SET[2]; SET[4] is unclear but a VS question without a figure, so it counts as right
    assert out["aacc"] == pytest.approx(500 / 6) and out["unclear"] == 1
    # figures: VD 0 (right, right), VD 1 (wrong, right), VS 1 (right); VS figure 0 is no figure
    assert out["facc"] == pytest.approx(200 / 3)
    # pairs: VD q0 (right, wrong), VD q1 (right, right), VS q0 (right, right)
    assert out["qacc"] == pytest.approx(200 / 3)
    # easy = pairs over visual_input 0/1 questions; hard = over edited figures (2)
    assert out["easy_aacc"] == pytest.approx(100.0) and out["hard_aacc"] == pytest.approx(50.0)
    assert (out["vd_aacc"], out["vs_aacc"]) == (pytest.approx(75.0), pytest.approx(100.0))
    assert out["subcategories"]["VD/illusion"]["qacc"] == pytest.approx(50.0)


def test_unclear_is_wrong_where_a_figure_was_shown():
    out = hb.score(SET[5:], {SET[5].key: "Maybe"})
    assert out["aacc"] == 0.0 and out["unclear"] == 1


def test_units_are_sets_so_a_resampled_set_counts_twice():
    judged = hb.judge(SET, {q.key: "Yes" if q.answer else "No" for q in SET})
    units = hb.units(judged)
    assert len(units) == 2
    once, twice = hb.aggregate(units), hb.aggregate([units[0], units[0], units[1]])
    assert once["qacc"] == twice["qacc"] == 100.0 and twice["n"] == 10


def test_missing_and_unknown_predictions():
    with pytest.raises(HallucError, match="5 of the 6 questions .* --allow-missing"):
        hb.score(SET, {SET[0].key: "Yes"})
    assert hb.score(SET, {SET[0].key: "Yes"}, allow_missing=True)["n"] == 1
    with pytest.raises(HallucError, match="1 predictions in the predictions are for questions not in"):
        hb.score(SET, {"VD_map_9_9_9": "Yes"}, allow_missing=True)


def test_spec():
    spec = benchmark_spec("hallusionbench")
    assert spec.headline == "qacc" and spec.metric("qacc").label == "HallusionBench qAcc"


# ---------------------------------------------------------------- real files (tianyi-lab/HallusionBench 744007c)

def _real():
    if not QUESTIONS.exists() or not SAMPLE.exists():
        pytest.skip("shared HallusionBench data not available")


def test_real_question_file():
    _real()
    questions = hb.read_questions(QUESTIONS)
    assert len(questions) == 1129 and sum(q.has_figure for q in questions) == 951
    assert sum(q.answer for q in questions) == 484


# Expected: tianyi-lab's utils.py (assign_correctness, get_eval_all, get_eval_fig, get_eval_pair_all,
# get_eval_pair_easy/hard) on the same rows, its GPT verdicts replaced by VLMEvalKit's YOrN_Extraction
# (agree 1, contradict 0, Unknown 2); ground truth and visual_input from HallusionBench.json.
SAMPLE_OFFICIAL = {"aacc": 61.023622047244096, "facc": 20.28985507246377, "qacc": 34.18803418803419,
                   "easy_aacc": 70.08547008547009, "hard_aacc": 29.069767441860463, "n": 254,
                   "vd_aacc": 49.375, "vd_facc": 17.54385964912281, "vd_qacc": 17.56756756756757,
                   "vs_aacc": 80.85106382978724, "vs_facc": 33.333333333333336, "vs_qacc": 62.7906976744186}
SYNTH_OFFICIAL = {"aacc": 74.13640389725421, "facc": 34.68208092485549, "qacc": 41.75824175824176,
                  "easy_aacc": 68.35164835164835, "hard_aacc": 66.74418604651163, "n": 1129,
                  "vd_aacc": 72.7580372250423, "vd_facc": 39.130434782608695, "vd_qacc": 45.848375451263536,
                  "vs_aacc": 75.65055762081785, "vs_facc": 25.862068965517242, "vs_qacc": 35.39325842696629}


def test_released_sample_scores_like_the_official_aggregation():
    _real()
    result = CliRunner().invoke(score_app, ["hallusionbench", "--questions", str(QUESTIONS), "--answers", str(SAMPLE),
                                            "--allow-missing", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {k: out[k] for k in SAMPLE_OFFICIAL} == pytest.approx(SAMPLE_OFFICIAL)
    assert set(out["subcategories"]) == {"VD/illusion", "VD/math", "VD/ocr", "VD/figure", "VD/video", "VS/chart",
                                         "VS/table", "VS/map", "VS/ocr"}


def test_sample_without_allow_missing_is_one_line():
    _real()
    result = CliRunner().invoke(score_app, ["hallusionbench", "--questions", str(QUESTIONS), "--answers", str(SAMPLE)])
    assert result.exit_code == 2 and "875 of the 1129 questions" in result.stderr
    result = CliRunner().invoke(score_app, ["hallusionbench", "--answers", str(SAMPLE)])  # no gt_answer in it
    assert result.exit_code == 2 and "missing key 'gt_answer'" in result.stderr


def test_full_result_file_scores_like_the_official_aggregation(tmp_path):
    """Every question answered by a rule (every 5th wrong, every 11th 'I cannot tell.'), written as an
    official result file with gt_answer, scored without --questions."""
    _real()
    rows = json.loads(QUESTIONS.read_text())
    for i, row in enumerate(rows):
        said = (row["gt_answer"] == "1") if i % 5 else (row["gt_answer"] != "1")
        row["model_prediction"] = ("Yes, it is." if said else "No, it is not.") if i % 11 else "I cannot tell."
    path = tmp_path / "HallusionBench_result.json"
    path.write_text(json.dumps(rows))
    result = CliRunner().invoke(score_app, ["hallusionbench", "--answers", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {k: out[k] for k in SYNTH_OFFICIAL} == pytest.approx(SYNTH_OFFICIAL)
