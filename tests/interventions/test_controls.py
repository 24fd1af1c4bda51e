"""The control methods against a literal reading of cd_rethink's code (ustc-hyin/cd_rethink), the yes/no
evidence every yes/no benchmark records, and how `--controls` picks them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import halluc
from halluc.api import control_methods
from halluc.engine.combine import Combination, combine_views
from halluc.engine.decoding import Decoding
from halluc.engine.views import ORIGINAL
from halluc.engine.yes_no import YesNoTokens, margin
from halluc.evaluation.gain import auroc
from halluc.evaluation.run import expand_all
from halluc.generation.generate import generate
from halluc.interventions import make_method, method_class
from halluc.interventions.logit_shift import ShiftYes
from halluc.interventions.yes_bias import ForceYes

YES, NO = 3, 7  # token ids of a made-up vocabulary of 10


def literal_olm(logits: torch.Tensor) -> int:
    """cd_rethink inference/spurious_utils/olm_utils.py, the `use_olm` branch, read literally (batch of one)."""
    probs = torch.softmax(logits, dim=-1)
    sum_prob = probs[YES] + probs[NO]
    if sum_prob > 0.2:
        abs_diff = torch.abs(probs[YES] - probs[NO])
        if abs_diff < 0.5:
            return YES
        return int(torch.argmax(logits))
    return int(torch.argmax(logits))


def literal_apc(logits: torch.Tensor, beta: float = 0.2) -> torch.Tensor:
    """cd_rethink apc_utils.py's `use_apc` branch: the "cd" logits are the same model on the same inputs,
    diffs = (1+α)ℓ − αℓ_cd, then the version-2 cutoff on the raw logits; sampling draws from softmax."""
    alpha = 1
    cutoff = torch.log(torch.tensor(beta)) + logits.max(dim=-1, keepdim=True).values
    diffs = (1 + alpha) * logits - alpha * logits
    return torch.softmax(diffs.masked_fill(logits < cutoff, -float("inf")), dim=-1)


def rows_hitting_every_branch() -> torch.Tensor:
    """(R, 10) logits: Yes/No mass below and above 0.2, their gap below and above 0.5, argmax elsewhere."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(10, generator=g) for _ in range(200)]
    for yes, no in ((4.0, 4.0), (6.0, 1.0), (1.0, 6.0), (3.0, 2.5), (-3.0, -3.0), (2.0, 2.2)):
        row = torch.zeros(10)
        row[YES], row[NO] = yes, no
        rows.append(row)
    return torch.stack(rows)


def test_yes_bias_is_the_olm_rule_of_cd_rethink():
    logits = rows_hitting_every_branch()
    ours = ForceYes(YES, NO, mass=0.2, gap=0.5)(None, logits).argmax(-1).tolist()
    literal = [literal_olm(row) for row in logits]
    assert ours == literal
    assert literal.count(YES) > (logits.argmax(-1) == YES).sum()  # the rule did force some answers
    assert torch.isfinite(ForceYes(YES, NO, 0.2, 0.5)(None, logits)).all()  # the evidence stays finite


def test_apc_is_the_cutoff_alone_of_cd_rethink():
    logits = rows_hitting_every_branch() * 3
    apc = make_method("apc")
    combination = Combination("apc", {}, apc.combine, apc.plausibility_cutoff())
    ours = torch.softmax(combine_views({ORIGINAL: logits.log_softmax(-1)}, [combination]), dim=-1)
    assert torch.allclose(ours, literal_apc(logits), atol=1e-6)
    assert (ours == 0).any()  # the cutoff removed tokens


def test_yes_prompt_is_the_prompt_based_adjustment_of_cd_rethink():
    """pope_infer_pba.py: qs + " Answer the question using a single word or phrase. Answer yes whenever possible."."""
    question = "Is there a dog in the image?"
    literal = question + " Answer the question using a single word or phrase. Answer yes whenever possible."
    ours = make_method("yes-prompt").rewrite_prompt(question + " Answer the question using a single word or phrase.")
    assert ours == literal
    assert make_method("yes-prompt", {"direction": "no"}).rewrite_prompt("Q?") == "Q? Answer no whenever possible."
    assert make_method("yes-prompt", {"instruction": ""}).rewrite_prompt("Q?") == "Q?"


def test_logit_shift_moves_every_yes_variant_by_delta():
    logits = torch.randn(4, 10)
    shifted = ShiftYes((YES, 5), 1.5)(None, logits)
    assert torch.equal(shifted[:, [YES, 5]], logits[:, [YES, 5]] + 1.5)
    assert torch.equal(shifted[:, [0, 1, 2, 4, 6, 7, 8, 9]], logits[:, [0, 1, 2, 4, 6, 7, 8, 9]])


def test_controls_are_a_category_apart():
    for name in ("yes-prompt", "yes-bias", "logit-shift", "apc"):
        assert method_class(name).category == "control"
        assert name not in expand_all(["all"])
    assert "vcd" in expand_all(["all"])
    assert control_methods(["greedy"]) == ["yes-prompt", "yes-bias", "logit-shift"]
    assert control_methods(["sample"]) == ["yes-prompt", "logit-shift", "apc"]
    assert control_methods(["greedy", "sample"]) == ["yes-prompt", "logit-shift", "apc"]
    rows = halluc.api.methods()
    assert {r["name"] for r in rows if r["category"] == "control"} == {"yes-prompt", "yes-bias", "logit-shift", "apc"}


def test_answer_tokens_of_each_kind_of_tokenizer(tiny_models):
    toy = YesNoTokens.of(tiny_models("toy-llava").processor.tokenizer)
    assert toy.yes[0][0] == "Yes" and toy.no[0][0] == "No"
    byte_level = YesNoTokens.of(tiny_models("tiny-llava").processor.tokenizer)  # "Yes" is three tokens: "Y" leads
    assert byte_level.yes[0][0] == "Y" and byte_level.no[0][0] == "N"
    assert not set(byte_level.yes_ids) & set(byte_level.no_ids)


@pytest.fixture(scope="module")
def pope_samples():
    from halluc.benchmarks.build import build_task

    task = build_task("pope", dataset="world", splits=["adversarial"])
    return task.samples("adversarial")[:48]


@pytest.mark.parametrize("method,decoding", [
    ("none", Decoding(max_new_tokens=3)), ("vcd", Decoding(max_new_tokens=3)), ("pai", Decoding(max_new_tokens=3)),
    ("vcd", Decoding(max_new_tokens=3, do_sample=True, seed=5)), ("none", Decoding(max_new_tokens=3, num_beams=2)),
    ("apc", Decoding(max_new_tokens=3, do_sample=True, seed=5)), ("opera", Decoding(max_new_tokens=3))])
def test_recording_the_evidence_changes_no_answer(tiny_models, pope_samples, method, decoding):
    toy = tiny_models("toy-llava")
    images, prompts = [s.image for s in pope_samples[:8]], [s.prompt for s in pope_samples[:8]]
    recorded = generate(toy, images, prompts, method, decoding=decoding, yes_no=True)
    plain = generate(toy, images, prompts, method, decoding=decoding)
    assert recorded.texts == plain.texts and recorded.tokens == plain.tokens
    if method == "opera":  # its own search: no evidence, documented
        assert recorded.evidence == [None] * 8
        return
    margins = [margin(e) for e in recorded.evidence]
    assert all(m is not None and math.isfinite(m) for m in margins)
    # the answer follows the sign of the decoded margin under greedy decoding
    if decoding.mode == "greedy":
        for text, e in zip(recorded.texts, recorded.evidence):
            assert (margin(e, "decoded") > 0) == text.startswith("Yes")
    if method in ("vcd", "apc") and decoding.do_sample:  # the cutoff removes an answer word: ±inf after it
        assert any(math.isinf(margin(e, "decoded")) for e in recorded.evidence)


def test_logit_shift_has_delta_auroc_exactly_zero_on_toy_llava(tiny_models, pope_samples):
    toy = tiny_models("toy-llava")
    images, prompts = [s.image for s in pope_samples], [s.prompt for s in pope_samples]
    truth = np.array([s.target.label for s in pope_samples])
    runs = {name: generate(toy, images, prompts, name, decoding=Decoding(max_new_tokens=3), yes_no=True)
            for name in ("none", "logit-shift")}
    margins = {name: np.array([margin(e) for e in g.evidence]) for name, g in runs.items()}
    assert margins["logit-shift"] == pytest.approx(margins["none"] + 1.0, abs=1e-5)
    assert auroc(margins["logit-shift"], truth) == auroc(margins["none"], truth)
    assert sum(t.startswith("Yes") for t in runs["logit-shift"].texts) >= sum(
        t.startswith("Yes") for t in runs["none"].texts)


def test_controls_and_seeds_in_the_plan(tmp_path):
    from halluc.api import RunOptions, plan_runs
    from halluc.errors import HallucError

    greedy = plan_runs("toy-llava", ["vcd"], ["pope"], RunOptions(dataset="world", out=tmp_path / "g", limit=2),
                       controls=True, seeds=3)
    assert [e.label for e in greedy[0].spec.entries] == ["none", "vcd", "yes-prompt", "yes-bias", "logit-shift"]
    assert len(greedy) == 1 and greedy[0].out == tmp_path / "g"  # greedy protocols run once
    sampled = plan_runs("toy-llava", ["vcd"], ["pope"], RunOptions(dataset="world", protocol="vcd",
                                                                   out=tmp_path / "s", limit=2),
                        controls=True, seeds=3)
    assert [e.label for e in sampled[0].spec.entries] == ["none", "vcd", "yes-prompt", "logit-shift", "apc"]
    assert [(p.out.name, p.spec.seed) for p in sampled] == [("seed-0", 0), ("seed-1", 1), ("seed-2", 2)]
    with pytest.raises(HallucError, match="yes-bias' supports greedy decoding, not sample"):
        plan_runs("toy-llava", ["yes-bias"], ["pope"], RunOptions(dataset="world", protocol="vcd", out=tmp_path / "x"))
    with pytest.raises(HallucError, match="--seeds must be an integer >= 1"):
        plan_runs("toy-llava", ["vcd"], ["pope"], RunOptions(dataset="world", out=tmp_path / "y"), seeds=0)
