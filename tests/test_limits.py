"""Limits and one validation path (issue 22 §3): bounds on what can exhaust the machine, NaN / inf refused, the
API and the CLI refusing with the same line, image placeholders in user text, `halluc.wrap`'s refusals, and
strictly typed scorer inputs. Each refusal is one line (HallucError; exit code 2) before any work."""
from __future__ import annotations

import json
import math

import pytest
from PIL import Image
from typer.testing import CliRunner

import halluc
from halluc import limits
from halluc.cli import app
from halluc.errors import HallucError
from halluc.interventions import make_methods
from halluc.modeling.placeholders import image_placeholders, model_placeholders
from halluc.modeling.registry import families


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines()  # model loading's own progress lines aside
             if line.strip() and not line.startswith(("loading", "Loading weights"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0][len("error: "):]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("limits") / "a.png"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(path)
    return path


@pytest.fixture
def no_load(monkeypatch):
    from halluc.api import core  # where `halluc.api.load` and every run resolve it

    monkeypatch.setattr(core, "load", lambda *a, **k: pytest.fail("weights loaded before the check"))


# ---------------------------------------------------------------- bounds and non-finite values, API == CLI

CASES = [  # (generate keyword, CLI option, value, message)
    ("seed", "--seed", 2**70, r"seed must be in \[0, 2\*\*63 - 1\]"),
    ("seed", "--seed", -1, r"seed must be in \[0, 2\*\*63 - 1\]"),
    ("num_beams", "--num-beams", 100_000, f"num_beams must be <= {limits.MAX_BEAMS}"),
    ("max_new_tokens", "--max-new-tokens", 10**8, f"max_new_tokens must be <= {limits.MAX_NEW_TOKENS}"),
    ("top_k", "--top-k", 10**12, r"top_k must be in \[0, "),
    ("temperature", "--temperature", math.nan, "temperature must be a finite number, got nan"),
    ("temperature", "--temperature", math.inf, "temperature must be a finite number, got inf"),
    ("top_p", "--top-p", math.nan, "top_p must be a finite number, got nan"),
    ("temperature", "--temperature", 1e-300, r"temperature must be in \[0.01, 100.0\]"),  # was a traceback
]


@pytest.mark.parametrize("keyword,option,value,message", CASES)
def test_decoding_bounds_are_refused_alike_by_the_api_and_the_cli(no_load, image, keyword, option, value, message):
    with pytest.raises(HallucError, match=message) as api_error:
        halluc.api.check_request("tiny-llava", [str(image)], ["hi"], decoding=halluc.Decoding(**{keyword: value}))
    text = {math.inf: "1e999", math.nan: "nan"}.get(value, str(value)) if isinstance(value, float) else str(value)
    assert one_line(cli("generate", "--model", "tiny-llava", "--image", image, "--prompt", "hi", option, text)) \
        == str(api_error.value)


@pytest.mark.parametrize("value,text", [(math.nan, "nan"), (math.inf, "1e999"), (math.inf, "inf"),
                                        (-math.inf, "-Infinity")])
def test_non_finite_method_parameters_are_refused_alike(no_load, tiny_llava, image, value, text):
    with pytest.raises(HallucError, match="vcd: parameter 'alpha' must be a finite number") as api_error:
        halluc.generate(tiny_llava, [str(image)], ["hi"], method="vcd", alpha=value)  # was: empty strings
    assert one_line(cli("generate", "--model", "tiny-llava", "--image", image, "--prompt", "hi", "--method", "vcd",
                        "--alpha", text)) == str(api_error.value)


@pytest.mark.parametrize("method,params,message", [
    ("opera", {"beams": 1000}, r"opera: parameter 'beams' must be in \[1, 64\]"),
    ("opera", {"candidates": 10**6}, r"opera: parameter 'candidates' must be in \[1, 1024\]"),
    ("vcd", {"noise_seed": 2**70}, r"vcd: parameter 'noise_seed' must be in \[0, 9223372036854775807\]"),
    ("ritual", {"view_seed": 2**64}, r"ritual: parameter 'view_seed' must be in \[0, "),
    ("damro", {"k": 2**80}, "damro: parameter 'k' must be within ±1e[+]06"),
    ("vcd", {"alpha": 1e300}, "vcd: parameter 'alpha' must be within ±1e[+]06"),
    ("opera", {"layer": -(10**9)}, "opera: parameter 'layer' must be within"),
    ("vista", {"lam": math.inf}, "vista: parameter 'lam' must be a finite number"),
    ("vista", {"gamma": math.nan}, "vista: parameter 'gamma' must be a finite number"),
])
def test_method_sizes_and_seeds_are_bounded(method, params, message):
    with pytest.raises(HallucError, match=message):
        make_methods(method, params)


def test_max_new_tokens_beyond_the_context_is_refused_before_generation(tiny_llava, image):
    context = tiny_llava.model.config.get_text_config().max_position_embeddings
    with pytest.raises(HallucError, match=f"exceed tiny-llava's context of {context} positions"):
        halluc.generate(tiny_llava, [str(image)], ["hi"], max_new_tokens=context + 1)
    with pytest.raises(HallucError, match=r"prompt tokens \+ .* new tokens exceed"):  # the prompt counts too
        halluc.generate(tiny_llava, [str(image)], ["hi"], max_new_tokens=context - 2)


def test_too_many_pairs_and_too_long_prompts_are_refused(tiny_llava, image):
    with pytest.raises(HallucError, match=f"at most {limits.MAX_BATCH} run as one batch"):
        halluc.generate(tiny_llava, [str(image)], ["hi"] * (limits.MAX_BATCH + 1))
    with pytest.raises(HallucError, match=f"at most {limits.MAX_PROMPT_CHARS}"):
        halluc.generate(tiny_llava, [str(image)], ["a" * (limits.MAX_PROMPT_CHARS + 1)])


@pytest.mark.parametrize("size,message", [((1, 101), "aspect ratio over 100:1"), ((300, 2), "aspect ratio over"),
                                          ((0, 5), "is empty"), ((8, 8), "at least 14")])
def test_image_shape_bounds(tmp_path, tiny_llava, size, message):
    if 0 in size:  # PIL cannot save an empty image: an in-memory one
        with pytest.raises(HallucError, match=message):
            halluc.generate(tiny_llava, [Image.new("RGB", size)], ["hi"])
        return
    path = tmp_path / "thin.png"
    Image.new("RGB", size).save(path)
    with pytest.raises(HallucError, match=message):
        halluc.generate(tiny_llava, [str(path)], ["hi"])


def test_image_pixels_are_bounded_from_the_header(tmp_path, monkeypatch, image):
    import halluc.images

    monkeypatch.setattr(halluc.images, "MAX_IMAGE_PIXELS", 32 * 32 - 1)
    one_line(cli("generate", "--model", "tiny-llava", "--image", image, "--prompt", "hi"))
    with pytest.raises(HallucError, match=r"32 x 32 = 1024 pixels; at most 1023"):
        halluc.api.check_request("tiny-llava", [str(image)], ["hi"])


@pytest.mark.parametrize("option,value,message", [
    ("--seed", str(2**70), r"--seed must be in \[0, 2\*\*63 - 1\]"),
    ("--batch-size", str(10**6), r"--batch-size must be in \[1, 1024\]"),
    ("--max-new-tokens", str(10**9), r"--max-new-tokens must be in \[1, 32768\]"),
    ("--alpha", "nan", "vcd: parameter 'alpha' must be a finite number"),
])
def test_run_options_are_bounded_before_loading(no_load, tmp_path, option, value, message):
    import re

    line = one_line(cli("run", "--model", "tiny-llava", "--dataset", "world", "--method", "vcd", "--out",
                        tmp_path / "r", option, value))
    assert re.search(message, line), line


def test_a_protocol_beyond_the_context_is_refused_before_generation(tmp_path, monkeypatch):
    from halluc.evaluation import run as run_module

    monkeypatch.setattr(run_module.Runner, "run", lambda *a, **k: pytest.fail("generation started"))
    line = one_line(cli("run", "--dataset", "world", "--benchmark", "chair", "--protocol", "opera512", "--limit", "1",
                        "--out", tmp_path / "r"))
    assert "512 new tokens exceed toy-llava's context of 256 positions" in line


def test_report_bootstrap_is_bounded(tmp_path):
    from tests.benchmarks.fake_runs import fake_rows, write_run

    run = write_run(tmp_path / "run", fake_rows("m", "pope", ("none", "vcd")))
    assert "--bootstrap must be in [0, 10000]" in one_line(cli("report", run, "--bootstrap", 10**9))
    with pytest.raises(HallucError, match="--bootstrap must be in"):
        from halluc.evaluation.intervals import run_intervals

        run_intervals(run, {}, n=10**9)


# ---------------------------------------------------------------- a method applied twice

def test_a_method_applied_twice_through_apply_and_generate_is_refused(tiny_llava, image):
    with halluc.apply(tiny_llava, "vcd"):
        with pytest.raises(HallucError, match="method 'vcd' is applied twice"):
            halluc.generate(tiny_llava, [str(image)], ["hi"], method="vcd", max_new_tokens=1)
        with pytest.raises(HallucError, match="method 'vcd' is applied twice"):
            halluc.generate(tiny_llava, [str(image)], ["hi"], method="ritual-vcd", max_new_tokens=1)
        with pytest.raises(HallucError, match="method 'vcd' is applied twice"):
            with halluc.apply(tiny_llava, "vcd"):
                pass
        assert halluc.generate(tiny_llava, [str(image)], ["hi"], method="vhr", max_new_tokens=1)
    assert tiny_llava.active == []


# ---------------------------------------------------------------- image placeholders in user text

def test_every_family_declares_its_placeholders():
    declared = set(image_placeholders())
    for record in families():
        assert record.placeholders and set(record.placeholders) <= declared, record.name


@pytest.mark.parametrize("placeholder", ["<image>", "<|image_pad|>", "<|video_pad|>", "<IMG_CONTEXT>", "<video>",
                                         "<start_of_image>", "<image_soft_token>", "<fake_token_around_image>",
                                         "<row_2_col_3>", "[IMG]", "[IMG_END]"])
def test_placeholders_in_prompts_are_refused_by_the_api_and_the_cli(no_load, image, placeholder):
    prompt = f"Is there a dog {placeholder} here?"
    with pytest.raises(HallucError, match="a model's image placeholder") as api_error:
        halluc.api.check_request("tiny-qwen2-vl", [str(image)], [prompt])
    assert one_line(cli("generate", "--model", "tiny-qwen2-vl", "--image", image, "--prompt", prompt)) \
        == str(api_error.value)


def test_placeholders_are_refused_on_every_family_where_they_crashed(tiny_models, image):
    for record in families():
        for placeholder in record.placeholders:
            text = "<row_1_col_1>" if placeholder.startswith("re:") else placeholder
            with pytest.raises(HallucError, match="image placeholder"):
                halluc.generate(tiny_models(record.tiny_name), [str(image)], [f"a {text} b"], max_new_tokens=1)


def test_a_method_text_holding_a_placeholder_is_refused():
    with pytest.raises(HallucError, match="icd: parameter 'disturbance' contains '<image>'"):
        make_methods("icd", {"disturbance": "You are <image> confused."})


def test_a_generic_models_own_placeholders_are_refused(image):
    import warnings

    from tests.helpers import tiny_aya_vision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generic adapter's note on available methods
        lvlm = halluc.wrap(*tiny_aya_vision(), name="tiny-aya-vision")
    assert "<|IMG_PATCH|>" in model_placeholders(lvlm.processor)  # no family record declares it
    with pytest.raises(HallucError, match=r"prompt 1 contains '<\|IMG_PATCH\|>'"):
        halluc.generate(lvlm, [str(image)], ["hi <|IMG_PATCH|>"], max_new_tokens=1)


def test_a_benchmark_question_holding_a_placeholder_is_refused_before_loading(no_load, tmp_path, monkeypatch):
    from halluc.benchmarks.pope import scoring as pope

    original = pope.read_pope_questions

    def hostile(*args, **kwargs):
        questions = original(*args, **kwargs)
        from dataclasses import replace

        return [replace(questions[0], text="Is there a <image> in it?"), *questions[1:]]

    monkeypatch.setattr(pope, "read_pope_questions", hostile)
    line = one_line(cli("run", "--model", "tiny-llava", "--dataset", "world", "--benchmark", "pope", "--out",
                        tmp_path / "r"))
    assert "question" in line and "contains '<image>'" in line


# ---------------------------------------------------------------- halluc.wrap

@pytest.mark.parametrize("not_a_model", ["llava", 3, None, object(), {"config": 1}])
def test_wrap_refuses_what_is_not_a_model(tiny_llava, not_a_model):
    with pytest.raises(HallucError, match="halluc.wrap takes a"):
        halluc.wrap(not_a_model, tiny_llava.processor)


@pytest.mark.parametrize("model,processor", [
    ("tiny-llava", "tiny-qwen2-vl"), ("tiny-llava", "tiny-llava-next"), ("tiny-qwen2-vl", "tiny-qwen3-vl"),
    ("tiny-llava", "tiny-instructblip"), ("tiny-idefics3", "tiny-llava-onevision"), ("tiny-gemma3", "tiny-mistral3"),
    ("tiny-idefics3", "tiny-smolvlm")])
def test_wrap_refuses_a_processor_of_another_family(tiny_models, model, processor):
    with pytest.raises(HallucError, match="does not belong to this"):
        halluc.wrap(tiny_models(model).model, tiny_models(processor).processor)


def test_wrap_accepts_each_familys_own_processor(tiny_models):
    for record in families():
        lvlm = tiny_models(record.tiny_name)
        assert halluc.wrap(lvlm.model, lvlm.processor).adapter.family == record.name


# ---------------------------------------------------------------- strictly typed scorer inputs

BAD_IDS = [1.7, True, "Infinity", "²", "٣", 1.0, None, [1], "1e3"]


def write_lines(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("bad", BAD_IDS + [math.inf])
def test_pope_ids_are_integers_or_digit_strings(tmp_path, bad):
    questions = write_lines(tmp_path / "q.jsonl", [{"question_id": 1, "image": "a.jpg", "text": "t", "label": "yes"}])
    answers = write_lines(tmp_path / "a.jsonl", [{"question_id": bad, "text": "Yes"}])
    assert "'question_id' must be an integer or a string of digits 0-9" in one_line(
        cli("score", "pope", "--questions", questions, "--answers", answers))
    good = write_lines(tmp_path / "g.jsonl", [{"question_id": " 1", "text": "Yes"}])
    assert cli("score", "pope", "--questions", questions, "--answers", good, "--json").exit_code == 0


@pytest.mark.parametrize("bad", BAD_IDS)
def test_chair_and_amber_ids_are_strict(tmp_path, bad):
    captions = write_lines(tmp_path / "c.jsonl", [{"image_id": bad, "caption": "A dog."}])
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"1": ["dog"]}))
    assert "'image_id' must be an integer" in one_line(cli("score", "chair", "--captions", captions, "--gt", gt))
    responses = tmp_path / "r.json"
    responses.write_text(json.dumps([{"id": bad, "response": "Yes"}]))
    amber = _amber_folder(tmp_path / "amber")
    assert "'id' must be an integer" in one_line(cli("score", "amber", "--answers", responses, "--data", amber,
                                                     "--extractor", "offline"))


def test_chair_ground_truth_keys_are_ascii_digits(tmp_path):
    captions = write_lines(tmp_path / "c.jsonl", [{"image_id": 2, "caption": "A dog."}])
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"²": ["dog"]}))
    assert "must map an integer image id" in one_line(cli("score", "chair", "--captions", captions, "--gt", gt))


def _amber_folder(folder, annotations=None):
    folder.mkdir(parents=True, exist_ok=True)
    items = annotations if annotations is not None else [
        {"id": 1, "type": "generative", "truth": ["dog"], "hallu": ["cat"]},
        {"id": 2, "type": "discriminative-hallucination", "truth": "yes"}]
    (folder / "annotations.json").write_text(json.dumps(items))
    (folder / "relation.json").write_text(json.dumps({"dog": ["puppy"]}))
    (folder / "safe_words.txt").write_text("thing\n")
    return folder


@pytest.mark.parametrize("item,message", [
    ({"id": 1, "type": "generative", "truth": ["dog"]}, "missing key 'hallu'"),
    ({"id": 1, "type": "generative", "truth": "dog", "hallu": []}, "'truth' must be a list of words"),
    ({"id": 1, "type": "discriminative-hallucination", "truth": 1}, "'truth' must be \"yes\" or \"no\""),
    ({"id": 1, "type": "other", "truth": "yes"}, "'type' must be generative or one of"),
    ({"id": 1.5, "type": "generative", "truth": [], "hallu": []}, "'id' must be an integer"),
    ([1, 2], "expected an object"),
])
def test_malformed_amber_folders_are_one_line(tmp_path, item, message):
    folder = _amber_folder(tmp_path / "amber", [item])
    responses = tmp_path / "r.json"
    responses.write_text(json.dumps([{"id": 1, "response": "A dog."}]))
    assert message in one_line(cli("score", "amber", "--answers", responses, "--data", folder,
                                   "--extractor", "offline"))


@pytest.mark.parametrize("change,message", [
    ({"images": [{"file_name": "x"}]}, "missing key 'id'"),
    ({"annotations": [{"id": 1, "image_id": "1", "category_id": 18}]}, "'image_id' must be an integer"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 99}]}, "category_id 99, which no category has"),
    ({"categories": [{"id": 18}]}, "missing key 'name'"),
    ({"categories": "dog"}, "'categories' must be a list"),
])
def test_malformed_coco_annotation_folders_are_one_line(tmp_path, change, message):
    folder = tmp_path / "annotations"
    folder.mkdir()
    instances = {"images": [{"id": 1}], "categories": [{"id": 18, "name": "dog"}],
                 "annotations": [{"id": 1, "image_id": 1, "category_id": 18}], **change}
    (folder / "instances_val2014.json").write_text(json.dumps(instances))
    (folder / "captions_val2014.json").write_text(json.dumps({"annotations": [{"id": 1, "image_id": 1,
                                                                               "caption": "A dog."}]}))
    captions = write_lines(tmp_path / "c.jsonl", [{"image_id": 1, "caption": "A dog."}])
    assert message in one_line(cli("score", "chair", "--captions", captions, "--gt", folder))


@pytest.mark.parametrize("field,bad", [("set_id", 1.7), ("question_id", True), ("figure_id", "²"),
                                       ("category", 3), ("gt_answer", True), ("visual_input", "7")])
def test_hallusionbench_fields_are_strict(tmp_path, field, bad):
    row = {"category": "VD", "subcategory": "chart", "set_id": "0", "figure_id": "0", "question_id": "0",
           "visual_input": "1", "question": "Is it?", "gt_answer": "1", "model_prediction": "Yes", field: bad}
    answers = tmp_path / "r.json"
    answers.write_text(json.dumps([row]))
    assert f"'{field}' must be" in one_line(cli("score", "hallusionbench", "--answers", answers))


def test_a_label_file_covering_far_fewer_questions_is_refused_unless_allowed(tmp_path):
    rows = [{"question_id": i, "image": "a.jpg", "text": f"q{i}", "label": "yes"} for i in range(1, 11)]
    questions = write_lines(tmp_path / "q.jsonl", rows)
    labels = write_lines(tmp_path / "l.jsonl", rows[:3])
    answers = write_lines(tmp_path / "a.jsonl", [{"question_id": i, "text": "Yes"} for i in range(1, 11)])
    args = ["score", "pope", "--questions", questions, "--answers", answers, "--labels", labels, "--json"]
    assert "relabels 3 of the 10 questions asked" in one_line(cli(*args))
    allowed = cli(*args, "--allow-partial-labels")
    assert allowed.exit_code == 0 and json.loads(allowed.output)["removed"] == 7
    assert cli(*args[:-3], "--labels", write_lines(tmp_path / "m.jsonl", rows[:9]), "--json").exit_code == 0


def test_an_image_a_familys_processor_cannot_take_is_one_line(tmp_path, tiny_models):
    """Pixtral's processor (tiny-mistral3: longest edge 40) scales a 28 x 2800 image to zero width; its own
    ValueError becomes one line naming the family and the size, never a traceback."""
    path = tmp_path / "thin.png"
    Image.new("RGB", (28, 2800)).save(path)
    with pytest.raises(HallucError, match=r"the mistral3 processor cannot take images of size 28x2800"):
        halluc.generate(tiny_models("tiny-mistral3"), [str(path)], ["hi"], max_new_tokens=1)
