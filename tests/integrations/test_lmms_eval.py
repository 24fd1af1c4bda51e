"""`lmms-eval --model halluc`: the plugin against lmms-eval's real registry, base class and request types, and
lmms-eval's own CLI running its own POPE task offline on the toy world.

lmms-eval is an optional extra with its own environment (`make test` builds `.venv-lmms` from
constraints/lmms-eval.txt and runs this folder there); where it is not importable every test here skips.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (make test runs this in .venv-lmms)")

from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.api.model import lmms  # noqa: E402
from PIL import Image  # noqa: E402

import halluc  # noqa: E402
from halluc.errors import HallucError  # noqa: E402
from halluc.integrations.lmms_eval_model import Halluc  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import lmms_world  # noqa: E402

POST_PROMPT = "\nAnswer the question using a single word or phrase."  # lmms-eval's pope_adv.yaml, default


def chat_request(doc_id: int, settings: dict, task: str = "t", split: str = "test") -> Instance:
    """A chat request as lmms-eval's ConfigurableMessagesTask builds it (ctx, doc_to_messages, settings, doc, ...)."""
    def doc_to_messages(doc):
        return [{"role": "user", "content": [{"type": "image", "url": doc["image"]},
                                             {"type": "text", "text": doc["question"]}]}]

    return Instance(request_type="generate_until", arguments=("", doc_to_messages, dict(settings), doc_id, task, split),
                    idx=0, metadata={"task": task, "doc_id": doc_id, "repeats": 1})


@pytest.fixture(scope="module")
def docs(images):
    return [{"image": Image.open(images[i % 2]).convert("RGB"), "question": q} for i, q in
            enumerate(["Is there a cat?", "What colour is it?", "Describe the image.", "Is there a dog?", "Hi"])]


def test_the_entry_point_registers_a_chat_model_lmms_eval_resolves():
    from lmms_eval.models import get_model, get_model_manifest

    assert get_model("halluc") is Halluc
    assert issubclass(Halluc, lmms) and Halluc.is_simple is False
    assert get_model_manifest("halluc").chat_class_path == "halluc.integrations.lmms_eval_model.Halluc"


def test_model_args_parse_the_stack_its_parameters_and_the_batch_size():
    model = Halluc.create_from_arg_string("pretrained=tiny-llava,method=vhr+vcd,vcd.alpha=0.5,batch_size=3",
                                          {"batch_size": 1, "max_batch_size": None, "device": "cpu"})
    assert (model.methods, model.params, model.batch_size) == (["vhr", "vcd"], {"vcd.alpha": 0.5}, 3)
    assert model.lvlm.name == "tiny-llava" and str(model.lvlm.device) == "cpu"
    assert Halluc.create_from_arg_string("pretrained=tiny-llava", {"batch_size": "4"}).batch_size == 4


@pytest.mark.parametrize("args, message", [
    ("pretrained=tiny-llava,method=vcdd", "unknown method 'vcdd'"),
    ("pretrained=tiny-llava,method=vcd,alpah=1", "has no parameter 'alpah'"),
    ("pretrained=tiny-llava,batch_size=0", "batch_size must be a positive integer"),
    ("pretrained=tiny-qwen2-vl,method=cca", "does not support qwen2_vl"),
])
def test_bad_model_args_are_one_line(args, message):
    with pytest.raises(HallucError, match=message):
        Halluc.create_from_arg_string(args, {})


@pytest.mark.parametrize("method, params", [("vcd", {"alpha": 1.0}), ("vhr+vcd", {"vcd.alpha": 0.5})])
def test_generate_until_equals_halluc_generate_in_request_order(docs, method, params):
    model = Halluc(pretrained="tiny-llava", method=method, batch_size=2, **params)
    model.task_dict = {"t": {"test": docs}}
    greedy = {"max_new_tokens": 6, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    longer = {**greedy, "max_new_tokens": 9}
    requests = [chat_request(i, longer if i % 2 else greedy) for i in range(len(docs))]
    answers = model.generate_until(requests)
    want = [halluc.generate(model.lvlm, [d["image"]], [d["question"]], method.split("+"),
                            max_new_tokens=9 if i % 2 else 6, **params)[0] for i, d in enumerate(docs)]
    assert answers == want


def test_generate_until_cuts_at_the_stop_strings(docs):
    model = Halluc(pretrained="tiny-llava")
    model.task_dict = {"t": {"test": docs}}
    full = model.generate_until([chat_request(2, {"max_new_tokens": 12})])[0]
    stop = full[3:5]
    assert model.generate_until([chat_request(2, {"max_new_tokens": 12, "until": [stop]})]) == [full[:full.index(stop)]]


def test_requests_halluc_cannot_answer_are_refused_in_one_line(docs):
    model = Halluc(pretrained="tiny-llava")
    two_images = {"image": docs[0]["image"], "question": "q"}

    def doc_to_messages(doc):
        return [{"role": "user", "content": [{"type": "image", "url": doc["image"]}, {"type": "image",
                                             "url": doc["image"]}, {"type": "text", "text": doc["question"]}]}]

    model.task_dict = {"t": {"test": [two_images]}}
    request = Instance("generate_until", ("", doc_to_messages, {}, 0, "t", "test"), 0,
                       metadata={"task": "t", "doc_id": 0, "repeats": 1})
    with pytest.raises(HallucError, match="one user turn with one image; this request has turns \\['user'\\], 2"):
        model.generate_until([request])
    with pytest.raises(HallucError, match="implements generate_until only"):
        model.loglikelihood([Instance("loglikelihood", ("ctx", "target", None, 0, "t", "test"), 0,
                                      metadata={"task": "t", "doc_id": 0, "repeats": 1})])


@pytest.mark.slow
def test_lmms_eval_cli_runs_its_pope_task_on_the_toy_world_and_agrees_with_halluc_score(tmp_path):
    """lmms-eval's own CLI and its own pope_adv task (only the data source changed), offline, on the toy world's
    adversarial POPE with toy-llava and VCD; its answers are halluc.generate's and its scores halluc score's."""
    limit = 60
    questions, images = lmms_world.world_pope()
    asked = lmms_world.write_dataset(questions, images, tmp_path / "pope", limit)
    tasks = lmms_world.write_task(tmp_path / "tasks", tmp_path / "pope")
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "lmms_eval", "--model", "halluc",
               "--model_args", "pretrained=toy-llava,method=vcd,batch_size=20,device=cpu",
               "--tasks", lmms_world.TASK, "--include_path", str(tasks.parent), "--limit", str(limit),
               "--output_path", str(tmp_path / "out"), "--log_samples"]
    run = subprocess.run(command, env=offline, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("*_results.json")
    (samples,) = (tmp_path / "out").rglob(f"*_samples_{lmms_world.TASK}.jsonl")
    metrics = json.loads(results.read_text())["results"][lmms_world.TASK]
    rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])
    assert len(rows) == limit

    # its answers are halluc.generate's on the same images and prompts
    answers = {r["pope_accuracy"]["question_id"]: r["filtered_resps"] for r in rows}
    model = halluc.load("toy-llava", device="cpu")
    want = halluc.generate(model, [images / q["image"] for q in asked], [q["text"] + POST_PROMPT for q in asked],
                           method="vcd", max_new_tokens=128)
    assert [answers[str(q["question_id"])] for q in asked] == want

    # its accuracy, precision, recall and F1 are halluc score's on the same answers
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in asked))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"question_id": k, "text": v}) + "\n"
                                              for k, v in answers.items()))
    scored = subprocess.run([sys.executable, "-m", "halluc", "score", "pope", "--questions", str(tmp_path / "q.jsonl"),
                             "--answers", str(tmp_path / "a.jsonl"), "--json"], capture_output=True, text=True)
    ours = json.loads(scored.stdout)
    assert ours["n"] == limit and ours["unparsed"] == 0
    for theirs, mine in [("pope_accuracy", "accuracy"), ("pope_precision", "precision"), ("pope_recall", "recall"),
                         ("pope_f1_score", "f1")]:
        assert metrics[f"{theirs},none"] * 100 == pytest.approx(ours[mine], abs=1e-9), theirs
    # the one that differs: lmms-eval's pope_aggregate_yes_ratio counts the labels' "yes", halluc's the answers'
    labels_yes = 100 * sum(q["label"] == "yes" for q in asked) / limit
    answers_yes = 100 * sum(v.strip().lower().startswith("yes") for v in answers.values()) / limit
    assert metrics["pope_yes_ratio,none"] * 100 == pytest.approx(labels_yes)
    assert ours["yes_ratio"] == pytest.approx(answers_yes)
