"""`halluc score`: JSON output equals the Python scorers; bad input is one line on stderr and exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from halluc.cli.score import score_app

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
runner = CliRunner()


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def pope_files(tmp_path):
    labels = ["yes", "no"] * 5
    questions = _jsonl(tmp_path / "q.json", [
        {"question_id": i + 1, "image": "a.jpg", "text": "Is there a dog in the image?", "label": lab}
        for i, lab in enumerate(labels)])
    # TP=3 FP=1 TN=4 FN=2 in the order of the questions
    texts = {1: "Yes", 3: "Yes", 5: "Yes", 7: "No", 9: "No", 2: "Yes", 4: "No", 6: "No", 8: "No", 10: "No"}
    answers = _jsonl(tmp_path / "a.jsonl", [{"question_id": k, "text": v} for k, v in texts.items()])
    return questions, answers


def _fail(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_pope_json(pope_files):
    questions, answers = pope_files
    result = runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == ["accuracy", "precision", "recall", "f1", "yes_ratio", "unparsed", "n"]
    assert out["accuracy"] == pytest.approx(70.0) and out["precision"] == pytest.approx(75.0)
    assert out["recall"] == pytest.approx(60.0) and out["f1"] == pytest.approx(66.6667, abs=1e-4)
    assert (out["yes_ratio"], out["unparsed"], out["n"]) == (pytest.approx(40.0), 0, 10)


def test_pope_table_and_parser_choice(pope_files):
    questions, answers = pope_files
    result = runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers),
                                       "--parser", "exact"])
    assert result.exit_code == 0, result.output
    assert "POPE (exact parser)" in result.stdout and "70.00" in result.stdout


def test_pope_unknown_parser_lists_choices(pope_files):
    questions, answers = pope_files
    line = _fail(runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers),
                                           "--parser", "yesno"]))
    assert "unknown parser 'yesno'" in line and "choices: exact, opera, pope, vcd, word" in line


def test_pope_malformed_line_names_the_line(pope_files, tmp_path):
    questions, _ = pope_files
    bad = _jsonl(tmp_path / "bad.jsonl", [{"question_id": 1, "text": "Yes"}, {"question_id": 2, "text": "No"},
                                          '{"question_id": 3, "text": '])
    line = _fail(runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(bad)]))
    assert "bad.jsonl:3: not valid JSON" in line


def test_pope_missing_file(pope_files, tmp_path):
    questions, _ = pope_files
    line = _fail(runner.invoke(score_app, ["pope", "--questions", str(questions),
                                           "--answers", str(tmp_path / "none.jsonl")]))
    assert "none.jsonl: no such file" in line


def test_chair_json_and_trim(tmp_path):
    captions = _jsonl(tmp_path / "c.jsonl", [{"image_id": 1, "caption": "A dog and a cat."},
                                             {"image_id": 2, "caption": "A car. A dog on the"}])
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"1": ["dog"], "2": ["car"]}))
    result = runner.invoke(score_app, ["chair", "--captions", str(captions), "--gt", str(gt), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == ["chair_s", "chair_i", "recall", "avg_len", "n"]
    assert (out["chair_s"], out["chair_i"], out["n"]) == (100.0, 50.0, 2)            # cat; dog on image 2
    result = runner.invoke(score_app, ["chair", "--captions", str(captions), "--gt", str(gt), "--json",
                                       "--trim-incomplete"])
    out = json.loads(result.stdout)
    assert (out["chair_s"], out["chair_i"]) == (50.0, pytest.approx(100 / 3))         # only the cat is left


def test_chair_with_coco_directory(tmp_path):
    (tmp_path / "instances_val2014.json").write_text(json.dumps({
        "images": [{"id": 7}], "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1}]}))
    (tmp_path / "captions_val2014.json").write_text(json.dumps({
        "images": [{"id": 7}], "annotations": [{"id": 1, "image_id": 7, "caption": "A man with a kite."}]}))
    captions = _jsonl(tmp_path / "c.jsonl", [{"image_id": 7, "caption": "A woman flies a kite near a car."}])
    result = runner.invoke(score_app, ["chair", "--captions", str(captions), "--gt", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["chair_i"] == pytest.approx(100 / 3)              # person, kite, car


def test_chair_missing_ground_truth_is_one_line(tmp_path):
    captions = _jsonl(tmp_path / "c.jsonl", [{"image_id": 1, "caption": "A dog."}])
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"2": ["dog"]}))
    assert "no ground truth" in _fail(runner.invoke(score_app, ["chair", "--captions", str(captions),
                                                                "--gt", str(gt)]))


def test_mme_json_and_table(tmp_path):
    (tmp_path / "existence.txt").write_text("a.jpg\tq1\tYes\tYes\na.jpg\tq2\tNo\tYes\n")
    result = runner.invoke(score_app, ["mme", "--results-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out == {"subtasks": {"existence": {"acc": 50.0, "acc_plus": 0.0, "score": 50.0}},
                   "perception": None, "cognition": None, "hallucination": None}
    table = runner.invoke(score_app, ["mme", "--results-dir", str(tmp_path)]).stdout
    assert "existence" in table and "incomplete" in table


def test_mme_bad_directory(tmp_path):
    assert "no MME result files" in _fail(runner.invoke(score_app, ["mme", "--results-dir", str(tmp_path)]))


def test_mme_real_sample_results():
    path = DATA / "mme" / "sample_results"
    if not path.exists():
        pytest.skip("shared MME data not available")
    out = json.loads(runner.invoke(score_app, ["mme", "--results-dir", str(path), "--json"]).stdout)
    assert len(out["subtasks"]) == 14
    assert out["perception"] == pytest.approx(963.6114445778311)
    assert out["cognition"] == pytest.approx(249.64285714285714)


# ---------------------------------------------------------------- robustness: every bad input is one line, exit 2

def test_pope_answers_for_another_version_name_both_directions(pope_files, tmp_path):
    questions, _ = pope_files
    answers = _jsonl(tmp_path / "other.jsonl", [{"question_id": i, "text": "Yes"} for i in range(3, 14)])
    line = _fail(runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers)]))
    assert "3 answers in" in line and "other.jsonl have question_ids that" in line and "(first: 11)" in line
    assert "2 of its 10 questions have no answer (first: 1)" in line


def test_pope_unanswered_questions_are_refused_unless_allowed(pope_files, tmp_path):
    questions, _ = pope_files
    answers = _jsonl(tmp_path / "part.jsonl", [{"question_id": i, "text": "Yes"} for i in range(1, 9)])
    line = _fail(runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers)]))
    assert "2 of the 10 questions in" in line and "--allow-missing" in line
    result = runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers),
                                       "--allow-missing", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["unparsed"] == 2


@pytest.mark.parametrize("text", [None, 3])
def test_pope_null_or_number_text_is_refused(pope_files, tmp_path, text):
    questions, _ = pope_files
    answers = _jsonl(tmp_path / "a.jsonl", [{"question_id": 1, "text": "Yes"}, {"question_id": 2, "text": text}])
    line = _fail(runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers)]))
    assert "a.jsonl:2: 'text' must be a string" in line


def test_pope_empty_answer_file(pope_files, tmp_path):
    questions, _ = pope_files
    (tmp_path / "empty.jsonl").write_text("")
    line = _fail(runner.invoke(score_app, ["pope", "--questions", str(questions),
                                           "--answers", str(tmp_path / "empty.jsonl")]))
    assert "empty.jsonl: no answers" in line


def test_mme_question_lists_without_responses_are_refused(tmp_path):
    (tmp_path / "existence.txt").write_text("a.jpg\tq1\tYes\na.jpg\tq2\tNo\n")
    (tmp_path / "count.txt").write_text("b.jpg\tq1\tYes\tYes\nb.jpg\tq2\tNo\tNo\n")
    line = _fail(runner.invoke(score_app, ["mme", "--results-dir", str(tmp_path)]))
    assert "existence.txt hold no responses" in line and "count.txt" not in line


def test_chair_duplicate_caption_names_the_image(tmp_path):
    captions = _jsonl(tmp_path / "c.jsonl", [{"image_id": 1, "caption": "A dog."}, {"image_id": 2, "caption": "A cat."},
                                             {"image_id": 1, "caption": "A dog again."}])
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"1": ["dog"], "2": ["cat"]}))
    line = _fail(runner.invoke(score_app, ["chair", "--captions", str(captions), "--gt", str(gt)]))
    assert "c.jsonl:3: image_id 1 is captioned twice (first at" in line


def test_score_commands_do_not_import_torch():
    """`halluc score` stays light: its modules (every benchmark's metrics) load without torch or datasets."""
    import subprocess
    import sys

    code = ("import sys; import halluc.cli.score; "
            "print(sorted(m for m in ('torch', 'datasets', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
