"""Property-based fuzzing (hypothesis) of what a user or a hostile file hands halluc: every scorer's input
files, the results.json reader (`halluc report`) and the CLI's option values.

The property, for every input: exit 0 with a result, or exit 2 with exactly one line (`error: ...`); never a
traceback, never a hang (each case has a deadline). Every test runs twice: with `CI_CASES` cases per property in
the ordinary suite, and with `FUZZ_CASES` under the `fuzz` marker (`pytest -m fuzz tests/test_fuzz.py`).
"""
from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from halluc.cli import app

CI_CASES = 25     # per property, in every run of the suite
FUZZ_CASES = 500  # per property, with -m fuzz

# values a hostile or careless file holds: wrong types, huge and non-finite numbers, look-alike digits
TRICKY = ["yes", "no", "Yes", "No", "1", "0", "2", "12", " 3 ", "²", "٣", "1.7", "Infinity", "NaN", "-1", "",
          "<image>", "<|image_pad|>", "generative", "discriminative-hallucination", "VD", "VS", "chart", "dog",
          "COCO_val2014_000000000001.jpg", "a\tb", "\u0000", "🙂"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(0, 20),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(TRICKY))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=3), max_leaves=8)


def rows_of(keys: list[str]) -> st.SearchStrategy:
    """Lists of JSON objects over the keys a reader expects (some missing, some extra), any value types."""
    row = st.dictionaries(st.sampled_from(keys + ["extra"]), JSON, max_size=len(keys) + 1)
    return st.lists(st.one_of(row, JSON), max_size=5)


def file_text(keys: list[str]) -> st.SearchStrategy:
    """A file's text: JSON lines or a JSON array of such rows, a bare JSON value, or any text."""
    rows = rows_of(keys)
    return st.one_of(rows.map(lambda rs: "\n".join(json.dumps(r) for r in rs)), rows.map(json.dumps),
                     JSON.map(json.dumps), st.text(max_size=40))


def check(result) -> None:
    """Exit 0, or exit 2 with one line; anything else fails with the traceback."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if result.exit_code == 0:
        return
    lines = [line for line in result.output.splitlines()  # the load's progress notes on stderr aside
             if line.strip() and not line.startswith(("loading ", "Loading weights"))]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output


def invoke(*args) -> None:
    check(CliRunner().invoke(app, [str(a) for a in args]))


def both_budgets(property_fn, deadline_s: float = 10.0):
    """(the CI test, the `fuzz`-marked test) for one property over `st.data()`."""
    def runner(cases):
        @settings(max_examples=cases, deadline=timedelta(seconds=deadline_s), database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])
        @given(data=st.data())
        def test(data):
            with tempfile.TemporaryDirectory() as tmp:
                property_fn(data, Path(tmp))
        return test
    return runner(CI_CASES), pytest.mark.fuzz(runner(FUZZ_CASES))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


# ---------------------------------------------------------------- scorers

POPE_KEYS = ["question_id", "image", "text", "label", "answer"]


def pope_property(data, tmp: Path) -> None:
    questions = write(tmp / "coco_pope_random.json", data.draw(file_text(POPE_KEYS)))
    answers = write(tmp / "answers.jsonl", data.draw(file_text(POPE_KEYS)))
    extra = data.draw(st.sampled_from([[], ["--allow-missing"], ["--labels", str(questions)],
                                       ["--labels", str(answers), "--allow-partial-labels"]]))
    parser = data.draw(st.sampled_from(["pope", "opera", "vcd", "exact", "word"]))
    invoke("score", "pope", "--questions", questions, "--answers", answers, "--parser", parser, "--json", *extra)


CHAIR_KEYS = ["image_id", "caption", "text", "id", "category_id", "name", "images", "annotations", "categories"]


def chair_property(data, tmp: Path) -> None:
    captions = write(tmp / "captions.jsonl", data.draw(file_text(CHAIR_KEYS)))
    if data.draw(st.booleans()):
        gt = write(tmp / "gt.json", data.draw(st.one_of(
            st.dictionaries(st.sampled_from(["1", "2", "²", "x", " 3"]), JSON).map(json.dumps),
            st.dictionaries(st.sampled_from(["1", "2"]), st.lists(st.sampled_from(["dog", "cat", "bike", 3]))
                            ).map(json.dumps), file_text(CHAIR_KEYS))))
    else:  # a COCO annotation folder with instances and captions files
        gt = tmp / "annotations"
        for name in ("instances_val2014.json", "captions_val2014.json"):
            coco = data.draw(st.fixed_dictionaries({}, optional={
                "images": rows_of(["id", "file_name"]), "annotations": rows_of(["id", "image_id", "category_id",
                                                                                "caption"]),
                "categories": rows_of(["id", "name"])}))
            write(gt / name, json.dumps(coco))
    invoke("score", "chair", "--captions", captions, "--gt", gt, "--json",
           *(["--trim-incomplete"] if data.draw(st.booleans()) else []))


MME_FIELD = st.one_of(st.sampled_from(["a.jpg", "b.jpg", "Yes", "No", "yes", "maybe", "", "Is it? Please answer yes "
                                       "or no."]), st.text(max_size=8))


def mme_property(data, tmp: Path) -> None:
    folder = tmp / "results"
    folder.mkdir()
    for subtask in data.draw(st.lists(st.sampled_from(["existence", "count", "OCR", "color", "other"]), max_size=3,
                                      unique=True)):
        lines = data.draw(st.lists(st.lists(MME_FIELD, min_size=0, max_size=5).map("\t".join), max_size=6))
        write(folder / f"{subtask}.txt", "\n".join(lines))
    invoke("score", "mme", "--results-dir", folder, "--json")


AMBER_KEYS = ["id", "type", "truth", "hallu", "response"]


def amber_property(data, tmp: Path) -> None:
    folder = tmp / "amber"
    items = data.draw(st.lists(st.fixed_dictionaries(
        {"id": st.one_of(st.integers(1, 6), SCALARS)},
        optional={"type": st.sampled_from(["generative", "discriminative-hallucination", "relation", "x"]) | SCALARS,
                  "truth": st.one_of(st.sampled_from(["yes", "no"]), st.lists(st.sampled_from(["dog", "cat"])),
                                     SCALARS),
                  "hallu": st.one_of(st.lists(st.sampled_from(["dog", "cat"])), SCALARS)}), max_size=6))
    write(folder / "annotations.json", data.draw(st.one_of(st.just(json.dumps(items)), file_text(AMBER_KEYS))))
    write(folder / "relation.json", data.draw(st.one_of(st.just('{"dog": ["puppy"]}'), JSON.map(json.dumps))))
    write(folder / "safe_words.txt", data.draw(st.text(max_size=12)))
    answers = write(tmp / "responses.json", data.draw(st.one_of(
        st.lists(st.fixed_dictionaries({"id": st.one_of(st.integers(1, 6), SCALARS),
                                         "response": st.one_of(st.sampled_from(["Yes", "No", "A dog."]), SCALARS)}),
                 max_size=6).map(json.dumps), file_text(AMBER_KEYS))))
    parser = data.draw(st.sampled_from(["official", "word", "pope"]))
    invoke("score", "amber", "--answers", answers, "--data", folder, "--extractor", "offline", "--parser", parser,
           "--json")


HB_KEYS = ["category", "subcategory", "set_id", "figure_id", "question_id", "visual_input", "question", "gt_answer",
           "model_prediction", "filename"]
HB_ROW = st.fixed_dictionaries(
    {"category": st.sampled_from(["VD", "VS"]) | SCALARS, "subcategory": st.sampled_from(["chart", "map"]) | SCALARS,
     "set_id": st.sampled_from(["0", "1", 0]) | SCALARS, "figure_id": st.sampled_from(["0", "1"]) | SCALARS,
     "question_id": st.sampled_from(["0", "1"]) | SCALARS, "visual_input": st.sampled_from(["0", "1", "2"]) | SCALARS,
     "question": st.text(max_size=8) | SCALARS, "gt_answer": st.sampled_from(["0", "1"]) | SCALARS},
    optional={"model_prediction": st.sampled_from(["Yes", "No", "unsure"]) | SCALARS, "filename": SCALARS})


def hallusionbench_property(data, tmp: Path) -> None:
    rows = st.lists(HB_ROW, max_size=6).map(json.dumps)
    answers = write(tmp / "result.json", data.draw(st.one_of(rows, file_text(HB_KEYS))))
    extra = []
    if data.draw(st.booleans()):
        extra += ["--questions", write(tmp / "questions.json", data.draw(st.one_of(rows, file_text(HB_KEYS))))]
    if data.draw(st.booleans()):
        extra.append("--allow-missing")
    invoke("score", "hallusionbench", "--answers", answers, "--json", *extra)


# ---------------------------------------------------------------- the results.json reader

def report_property(data, tmp: Path) -> None:
    from tests.benchmarks.fake_runs import fake_rows, write_run

    run = write_run(tmp / "run", fake_rows("m", data.draw(st.sampled_from(["pope", "chair"])), ("none", "vcd")))
    for name in ("results.json", "config.json"):
        if data.draw(st.booleans()):
            continue
        document = json.loads((run / name).read_text())
        rows = document.get("rows", [document])
        for _ in range(data.draw(st.integers(1, 4))):  # break a few fields of a few rows
            row = rows[data.draw(st.integers(0, len(rows) - 1))]
            key = data.draw(st.sampled_from(sorted(row) + ["rows", "config"]))
            if data.draw(st.booleans()):
                row.pop(key, None)
            else:
                row[key] = data.draw(JSON)
        text = data.draw(st.one_of(st.just(json.dumps(document)), JSON.map(json.dumps), st.text(max_size=20)))
        write(run / name, text)
    invoke("report", run, "--bootstrap", "0")


# ---------------------------------------------------------------- CLI option values

NUMBERS = st.one_of(st.integers(-3, 70).map(str), st.integers(-2**70, 2**70).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["nan", "inf", "-inf", "1e999", "Infinity", "1.7", "true", "", "x", "2**70", "0x10",
                                     "1_000", " 3", "²"]))
GENERATE_OPTIONS = ["--max-new-tokens", "--num-beams", "--seed", "--temperature", "--top-p", "--top-k"]
METHOD_OPTIONS = {"vcd": ["--alpha", "--beta", "--noise-step", "--noise-seed"], "opera": ["--beams", "--candidates",
                                                                                           "--scale", "--threshold"],
                  "icd": ["--alpha", "--disturbance"], "vista": ["--lam", "--gamma"], "damro": ["--k"],
                  "deco": ["--candidate-k", "--candidate-p"], "sid": ["--keep", "--select-layer"]}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "a.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path)
    return path


def generate_property(data, tmp: Path, image: Path) -> None:
    """Real generation on tiny-llava (two new tokens at most, so that an accepted case stays fast)."""
    method = data.draw(st.sampled_from(["none", *METHOD_OPTIONS]))
    args = ["generate", "--model", "tiny-llava", "--image", image, "--prompt", data.draw(st.sampled_from(
        ["Is there a dog?", "<image> dog?", "x" * 10, " "])), "--method", method, "--max-new-tokens", "2"]
    for option in data.draw(st.lists(st.sampled_from(GENERATE_OPTIONS[1:] + METHOD_OPTIONS.get(method, [])),
                                     max_size=3, unique=True)):
        args += [option, data.draw(NUMBERS | st.sampled_from(["<image>", "You are confused."]))]
    if data.draw(st.booleans()):
        args.append("--do-sample")
    invoke(*args)


class Loaded(Exception):
    """Raised instead of loading weights: every check of the options passed."""


def run_property(data, tmp: Path) -> None:
    """`halluc run`'s options are all checked before the model loads: one line, or the load is reached."""
    from halluc.api import core as api  # the model calls live here (halluc.api resolves them from it)

    def load(*args, **kwargs):
        raise Loaded

    original, api.load = api.load, load
    try:
        args = ["run", "--model", "tiny-llava", "--dataset", "world", "--out", tmp / "run"]
        for option in data.draw(st.lists(st.sampled_from(["--limit", "--seed", "--batch-size", "--max-new-tokens",
                                                          "--alpha", "--beams"]), max_size=3, unique=True)):
            args += [option, data.draw(NUMBERS)]
        args += ["--method", data.draw(st.sampled_from(["vcd", "opera", "vcd+vcd", "none"]))]
        result = CliRunner().invoke(app, [str(a) for a in args])
        if not isinstance(result.exception, Loaded):
            check(result)
    finally:
        api.load = original


test_pope_scorer, test_pope_scorer_fuzz = both_budgets(pope_property)
test_chair_scorer, test_chair_scorer_fuzz = both_budgets(chair_property)
test_mme_scorer, test_mme_scorer_fuzz = both_budgets(mme_property)
test_amber_scorer, test_amber_scorer_fuzz = both_budgets(amber_property)
test_hallusionbench_scorer, test_hallusionbench_scorer_fuzz = both_budgets(hallusionbench_property)
test_results_reader, test_results_reader_fuzz = both_budgets(report_property)
test_run_options, test_run_options_fuzz = both_budgets(run_property, deadline_s=60)


def _generate_tests():
    def runner(cases):
        @settings(max_examples=cases, deadline=timedelta(seconds=60), database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(data=st.data())
        def test(image, data):
            with tempfile.TemporaryDirectory() as tmp:
                generate_property(data, Path(tmp), image)
        return test
    return runner(CI_CASES), pytest.mark.fuzz(runner(FUZZ_CASES))


test_generate_options, test_generate_options_fuzz = _generate_tests()
