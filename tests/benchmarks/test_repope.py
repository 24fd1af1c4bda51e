"""RePOPE: the same POPE answers against corrected labels, removed questions counted; real-file regressions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from halluc.benchmarks.pope import scoring as pope
from halluc.benchmarks.pope.scoring import PopeQuestion, relabel, score_relabelled
from halluc.benchmarks.spec import benchmark_spec
from halluc.cli.score import score_app
from halluc.errors import HallucError
from tests.conftest import SHARED_DATA

SPLITS = ("random", "popular", "adversarial")


def _q(qid, label, text=None):
    return PopeQuestion(qid, f"img{qid}.jpg", text or f"Is there a thing{qid} in the image?", label)


def test_relabel_keeps_corrects_and_counts_removed():
    questions = [_q(1, True), _q(2, False), _q(3, True), _q(4, False)]
    kept, removed = relabel(questions, [_q(1, False), _q(2, False), _q(4, True)])
    assert [(q.question_id, q.label) for q in kept] == [(1, False), (2, False), (4, True)]
    assert removed == [3]


def test_scores_by_hand():
    # POPE labels yes,no,yes,no,yes,no; RePOPE: 1 yes->no, 4 no->yes, 6 removed.
    questions = [_q(i, i % 2 == 1) for i in range(1, 7)]
    relabelled = [_q(1, False), _q(2, False), _q(3, True), _q(4, True), _q(5, True)]
    answers = {1: "Yes", 2: "No", 3: "Yes", 4: "No", 5: "No", 6: "Yes"}
    out = score_relabelled(questions, relabelled, answers)
    # kept 1..5: preds Y N Y N N vs labels N N Y Y Y -> TP 1 (3), FP 1 (1), TN 1 (2), FN 2 (4, 5)
    assert out["removed"] == 1 and out["n"] == 5
    assert out["accuracy"] == pytest.approx(40.0) and out["precision"] == pytest.approx(50.0)
    assert out["recall"] == pytest.approx(100 / 3) and out["f1"] == pytest.approx(40.0)
    assert out["yes_ratio"] == pytest.approx(40.0)


def test_answers_are_checked_against_the_asked_questions():
    questions = [_q(1, True), _q(2, False)]
    with pytest.raises(HallucError, match="have question_ids that"):
        score_relabelled(questions, [_q(1, True)], {1: "Yes", 2: "No", 3: "Yes"})
    with pytest.raises(HallucError, match="1 of the 2 questions"):
        score_relabelled(questions, [_q(1, True)], {1: "Yes"})   # question 2 is removed but was asked


def test_labels_for_another_question_set_are_refused():
    with pytest.raises(HallucError, match="relabels another question set .* question 2 .*imange"):
        relabel([_q(1, True), _q(2, False, "Is there a dog in the imange?")], [_q(2, True)])


def test_spec_corrects_pope_and_labels_are_its_own():
    spec = benchmark_spec("repope")
    assert spec.corrects == "pope" and spec.headline == "f1" and spec.metric("f1").label == "RePOPE F1"
    assert "removed" in spec.keys()


# ---------------------------------------------------------------- real files (POPE 3df3ba1, RePOPE bcf22e5)

def _real(split):
    questions = SHARED_DATA / "pope" / "coco" / f"coco_pope_{split}.json"
    labels = SHARED_DATA / "repope" / f"coco_repope_{split}.json"
    if not questions.exists() or not labels.exists():
        pytest.skip("shared POPE / RePOPE data not available")
    return questions, labels


# Expected: RePOPE's own src/eval_utils.py (compute_answer + compute_results) on the same answers.
ORACLE = {"random": (2774, 226, 1154, 139, 1476, 5), "popular": (2727, 273, 1154, 139, 1395, 39),
          "adversarial": (2684, 316, 1154, 139, 1358, 33)}  # n, removed, TP, FP, TN, FN
FLIPPED = {"random": (80.144986, 82.22783, 75.151057, 85.849871, 47.728911),
           "popular": (79.82491, 81.408141, 75.984848, 84.073764, 48.40484),
           "adversarial": (79.903923, 81.296572, 76.125095, 84.077506, 48.845007)}  # F1, acc, P, R, yes ratio


@pytest.mark.parametrize("split", SPLITS)
def test_real_pope_labels_as_answers(split):
    """A model that agrees with every POPE label: RePOPE's corrections are exactly its errors
    (139 wrong "yes" labels in every split)."""
    questions, labels = _real(split)
    asked = pope.read_pope_questions(questions)
    answers = {q.question_id: "Yes" if q.label else "No" for q in asked}
    out = score_relabelled(asked, pope.read_pope_questions(labels), answers)
    n, removed, tp, fp, tn, fn = ORACLE[split]
    assert (out["n"], out["removed"], out["unparsed"]) == (n, removed, 0)
    assert out["precision"] == pytest.approx(100 * tp / (tp + fp))
    assert out["recall"] == pytest.approx(100 * tp / (tp + fn))
    assert out["accuracy"] == pytest.approx(100 * (tp + tn) / n)


@pytest.mark.parametrize("split", SPLITS)
def test_real_free_form_answers_match_repopes_script(split, tmp_path):
    questions, labels = _real(split)
    asked = pope.read_pope_questions(questions)
    rows = [{"question_id": q.question_id, "text": "Yes, there is one." if q.label != (q.question_id % 7 == 0)
             else "No, there is not."} for q in asked]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers),
                                            "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    f1, acc, precision, recall, yes = FLIPPED[split]
    assert out["f1"] == pytest.approx(f1, abs=1e-5) and out["accuracy"] == pytest.approx(acc, abs=1e-5)
    assert out["precision"] == pytest.approx(precision, abs=1e-5) and out["recall"] == pytest.approx(recall, abs=1e-5)
    assert out["yes_ratio"] == pytest.approx(yes, abs=1e-5) and out["removed"] == ORACLE[split][1]


def test_cli_labels_repope_finds_the_fetched_file(tmp_path, monkeypatch):
    questions, labels = _real("random")
    home = tmp_path / "home"
    (home / "repope").mkdir(parents=True)
    (home / "repope" / "coco_repope_random.json").symlink_to(labels)
    monkeypatch.setenv("HALLUC_DATA", str(home))
    answers = tmp_path / "a.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q.question_id, "text": "Yes"}) + "\n"
                               for q in pope.read_pope_questions(questions)))
    runner = CliRunner()
    result = runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers),
                                       "--labels", "repope", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["removed"] == 226 and out["yes_ratio"] == 100.0 and out["recall"] == 100.0
    renamed = tmp_path / "questions.json"
    renamed.symlink_to(questions)
    result = runner.invoke(score_app, ["pope", "--questions", str(renamed), "--answers", str(answers),
                                       "--labels", "repope"])
    assert result.exit_code == 2 and "cannot tell the POPE split" in result.stderr
    monkeypatch.setenv("HALLUC_DATA", str(tmp_path / "empty"))
    result = runner.invoke(score_app, ["pope", "--questions", str(questions), "--answers", str(answers),
                                       "--labels", "repope"])
    assert result.exit_code == 2 and "halluc data fetch repope" in result.stderr


def test_cli_labels_on_the_2910_file_is_one_line(tmp_path):
    _, labels = _real("random")
    old = SHARED_DATA / "pope" / "coco_2910" / "coco_pope_random.json"
    answers = tmp_path / "a.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q.question_id, "text": "Yes"}) + "\n"
                               for q in pope.read_pope_questions(old)))
    result = CliRunner().invoke(score_app, ["pope", "--questions", str(old), "--answers", str(answers),
                                            "--labels", str(labels)])
    assert result.exit_code == 2 and "relabels another question set" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_fetch_pins_repope_with_checksums():
    from halluc.benchmarks.fetch import fetchable

    remotes = fetchable()["repope"].remotes
    assert len(remotes) == 3 and all(r.sha256 and "bcf22e5690d587cce34e1728af3efdcfaf747d29" in r.url for r in remotes)
    for remote in remotes:
        local = SHARED_DATA / remote.target
        if local.exists():
            import hashlib

            assert hashlib.sha256(local.read_bytes()).hexdigest() == remote.sha256


def test_no_twin_without_matching_files(tmp_path):
    from halluc.benchmarks.pope.task import PopeTask
    from halluc.benchmarks.spec import companion_tasks

    task = PopeTask(data_dir=Path(tmp_path), images_dir=Path(tmp_path), relabel_dirs=(Path(tmp_path),))
    assert companion_tasks(task) == []


def test_pope_run_gains_repope_rows_from_the_same_answers(tmp_path):
    """RePOPE files beside the POPE files: one RePOPE row per split and a mean, no extra generation."""
    import halluc
    from halluc.benchmarks.pope.scoring import build_pope_from_coco
    from halluc.evaluation.run import RunOptions, read_outputs
    from halluc.world import WorldConfig, generate_world

    files = generate_world(tmp_path / "world", WorldConfig(image_size=64, min_objects=3, seed=1), n_images=8,
                           split="val")
    data = tmp_path / "pope"
    data.mkdir()
    for split in SPLITS:
        questions = build_pope_from_coco(files.instances, split, n_images=2, seed=0)
        rows = [{"question_id": q.question_id, "image": q.image, "text": q.text, "label": "yes" if q.label else "no"}
                for q in questions]
        (data / f"coco_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        relabelled = [{**r, "label": "no" if r["question_id"] == 1 else r["label"]} for r in rows[:-2]]
        (data / f"coco_repope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in relabelled))
    out, rows = halluc.run("tiny-llava", ["none"], "pope", RunOptions(data=data, images=files.images,
                                                                      out=tmp_path / "run", max_new_tokens=2,
                                                                      device="cpu"))
    by = {(r["benchmark"], r["split"]): r for r in rows}
    assert set(by) == {(b, s) for b in ("pope", "repope") for s in (*SPLITS, "mean")}
    for split in SPLITS:
        assert by[("repope", split)]["n"] == 10 and by[("repope", split)]["removed"] == 2
        texts = {k: v["text"] for k, v in read_outputs(out, next((out / "samples").iterdir()).name, split).items()}
        asked = pope.read_pope_questions(data / f"coco_pope_{split}.json")
        expected = score_relabelled(asked, pope.read_pope_questions(data / f"coco_repope_{split}.json"),
                                    {int(k): v for k, v in texts.items()})
        assert {k: by[("repope", split)][k] for k in expected} == pytest.approx(expected)
    assert by[("repope", "mean")]["removed"] == 6
    results = json.loads((out / "results.json").read_text())
    assert set(results["config"]["companions"]["repope"]["labels"]) == set(SPLITS)
