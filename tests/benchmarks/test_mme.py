"""MME: the official parser, acc / acc+ / score by hand, file layouts, and the released sample results."""
from __future__ import annotations

from pathlib import Path

import pytest

from halluc.benchmarks.mme import scoring as mme
from halluc.benchmarks.mme.scoring import MMEItem, parse_mme, score_mme, score_mme_subtask
from halluc.errors import HallucError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.parametrize("response,expected", [
    ("Yes", True), ("no", False), ("YES!", True), ("Yes, there is a train.", True), ("No.", False),
    (" yes", True),                 # within the first 4 characters
    ("Nope", False), ("none of them", False),
    ("The answer is yes", None),    # "yes" is not within the first 4 characters
    ("I do not know", None), ("", None), ("y", None),
])
def test_parse_mme(response, expected):
    assert parse_mme(response) is expected


def _pair(image: str, yes_response: str, no_response: str, subtask: str = "existence") -> list[MMEItem]:
    return [MMEItem(subtask, image, f"Is there a dog in {image}?", True, yes_response),
            MMEItem(subtask, image, f"Is there a cat in {image}?", False, no_response)]


def test_subtask_by_hand():
    # image a: both right; b: one right; c: one right + one unparsed
    # acc = 4/6 = 66.67, acc+ = 1/3 = 33.33, score = 100
    items = _pair("a.jpg", "Yes", "No") + _pair("b.jpg", "No", "No") + _pair("c.jpg", "yes it is", "maybe")
    s = score_mme_subtask(items)
    assert s.acc == pytest.approx(200 / 3)
    assert s.acc_plus == pytest.approx(100 / 3)
    assert s.score == pytest.approx(100.0)
    assert (s.n, s.other) == (6, 1)
    assert s.as_dict() == {"acc": s.acc, "acc_plus": s.acc_plus, "score": s.score}


def test_pairs_must_belong_to_one_image():
    items = _pair("a.jpg", "Yes", "No")
    with pytest.raises(HallucError, match="questions 1 and 2 should be the pair of one image"):
        score_mme_subtask([items[0], MMEItem("existence", "b.jpg", "q", False, "No")])
    with pytest.raises(HallucError, match="3 questions; expected two per image"):
        score_mme_subtask(items + items[:1])


def test_totals_need_all_their_subtasks():
    perfect = {name: _pair("a.jpg", "Yes", "No", name) for name in mme.HALLUCINATION}
    s = score_mme(perfect)
    assert s.hallucination == pytest.approx(800.0)
    assert s.perception is None and s.cognition is None
    everything = {name: _pair("a.jpg", "Yes", "Yes", name) for name in mme.SUBTASKS}   # acc 50, acc+ 0
    s = score_mme(everything)
    assert (s.perception, s.cognition, s.hallucination) == pytest.approx((500.0, 200.0, 200.0))
    with pytest.raises(HallucError, match="unknown MME subtask 'ocr'"):
        score_mme({"ocr": perfect["existence"]})


def test_llava_prompt():
    assert mme.llava_prompt("Is there a train in this image? Please answer yes or no.") == (
        "Is there a train in this image?\nAnswer the question using a single word or phrase.")


def test_result_files_round_trip(tmp_path):
    items = _pair("1.jpg", "Yes", "No\nreally") + _pair("2.jpg", "", "No")
    mme.write_mme_results(items, tmp_path)
    back = mme.read_mme_results(tmp_path)
    assert list(back) == ["existence"]
    assert [i.response for i in back["existence"]] == ["Yes", "No really", "", "No"]
    assert [(i.image, i.answer) for i in back["existence"]] == [(i.image, i.answer) for i in items]


def test_result_file_errors(tmp_path):
    (tmp_path / "count.txt").write_text("a.jpg\tq?\tYes\tyes\na.jpg\tq?\tMaybe\tno\n")
    with pytest.raises(HallucError, match=r"count.txt:2: ground truth must be Yes or No"):
        mme.read_mme_results(tmp_path)
    (tmp_path / "count.txt").write_text("a.jpg\tq?\n")
    with pytest.raises(HallucError, match=r"count.txt:1: expected image<TAB>question"):
        mme.read_mme_results(tmp_path)
    with pytest.raises(HallucError, match="no MME result files"):
        mme.read_mme_results(tmp_path / "..")
    with pytest.raises(HallucError, match="not a directory"):
        mme.read_mme_results(tmp_path / "missing")


def test_release_layouts(tmp_path):
    flat = tmp_path / "existence"
    flat.mkdir()
    (flat / "000.jpg").write_bytes(b"")
    (flat / "000.txt").write_text("Is there a dog? Please answer yes or no.\tYes\n"
                                  "Is there a cat? Please answer yes or no.\tNo\n")
    split = tmp_path / "celebrity"
    (split / "images").mkdir(parents=True)
    (split / "questions_answers_YN").mkdir()
    (split / "images" / "tt01.png").write_bytes(b"")
    (split / "questions_answers_YN" / "tt01.txt").write_text("Is it X?\tNo\nIs it Y?\tYes\n")
    items = mme.read_mme_release(tmp_path, ["existence", "celebrity"])
    assert [(i.subtask, i.image, i.answer) for i in items] == [
        ("existence", "000.jpg", True), ("existence", "000.jpg", False),
        ("celebrity", "tt01.png", False), ("celebrity", "tt01.png", True)]
    assert items[2].image_path == str(split / "images" / "tt01.png")
    with pytest.raises(HallucError, match="missing subtask folder"):
        mme.read_mme_release(tmp_path, ["count"])


# ---------------------------------------------------------------- the released files

QUESTIONS = {"existence": 60, "count": 60, "position": 60, "color": 60, "OCR": 40, "posters": 294,
             "celebrity": 340, "scene": 400, "landmark": 400, "artwork": 400, "commonsense_reasoning": 140,
             "numerical_calculation": 40, "text_translation": 40, "code_reasoning": 40}


def _real(folder: str) -> dict[str, list[MMEItem]]:
    path = DATA / "mme" / folder
    if not path.exists():
        pytest.skip("shared MME data not available")
    return mme.read_mme_results(path)


def test_question_lists_match_the_spec_counts_and_are_refused_as_results():
    folder = DATA / "mme" / "questions"
    if not folder.exists():
        pytest.skip("shared MME data not available")
    questions = {name: mme.read_mme_result_file(folder / f"{name}.txt", name) for name in mme.SUBTASKS}
    assert {k: len(v) for k, v in questions.items()} == QUESTIONS
    assert sum(QUESTIONS[k] for k in mme.PERCEPTION) == 2114 and sum(QUESTIONS[k] for k in mme.COGNITION) == 260
    assert all(i.response == "" for items in questions.values() for i in items)   # no 4th column
    with pytest.raises(HallucError, match="hold no responses"):                     # not a silent 0 everywhere
        mme.read_mme_results(folder)


def test_sample_results_scores():
    # The released LaVIN responses in eval_tool.zip, scored with the official rules.
    s = score_mme(_real("sample_results"))
    assert s.subtasks["existence"].as_dict() == pytest.approx({"acc": 95.0, "acc_plus": 90.0, "score": 185.0})
    assert s.subtasks["count"].score == pytest.approx(100 * 37 / 60 + 100 * 8 / 30)
    assert s.subtasks["landmark"].other == 1 and s.subtasks["commonsense_reasoning"].other == 11
    assert s.perception == pytest.approx(963.6114445778311)
    assert s.cognition == pytest.approx(249.64285714285714)
    assert s.hallucination == pytest.approx(185.0 + 88.33333333333333 + 63.333333333333336 + 75.0)
