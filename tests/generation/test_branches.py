"""The multi-branch engine: combination formula, plausibility cutoff, one token per sample, cache correctness."""
import math
from dataclasses import dataclass

import pytest
import torch

import halluc
from halluc.engine.combine import BranchCombiner, Combination, combine_views
from halluc.engine.decoding import Decoding
from halluc.engine.sampler import Sampler
from halluc.engine.views import ORIGINAL, Branch, ViewLayout, merge_inputs
from halluc.errors import HallucError
from halluc.interventions import Method, param, register
from halluc.interventions.registry import unregister
from tests.conftest import FAMILIES
from tests.helpers import combiner_for


@dataclass(frozen=True)
class TextContrast(Method):
    """Test decoding method: (1+a)·l(image) − a·l(text only), like PAI's guidance without the edit."""

    name = "test-textcontrast"
    kind = "decoding"
    alpha: float = param(1.0, low=0.0)
    beta: float = param(0.1, low=0.0, high=1.0)

    def branches(self, request):
        return [Branch("text", with_image=False)]

    def combine(self, views):
        return (1 + self.alpha) * views[ORIGINAL] - self.alpha * views["text"]

    def plausibility_cutoff(self):
        return self.beta


@dataclass(frozen=True)
class Recorder(TextContrast):
    name = "test-recorder"
    seen: list = param(())  # type: ignore[assignment]

    def combine(self, views):
        self.seen.append({k: v.clone() for k, v in views.items()})
        return super().combine(views)


@pytest.fixture(scope="module", autouse=True)
def methods():
    register(TextContrast)
    yield
    unregister(TextContrast.name)


def test_combiner_formula_and_cutoff_on_planted_logits():
    method = TextContrast(alpha=1.0, beta=0.5)
    combiner = combiner_for(method, ["text"])
    original = torch.tensor([[2.0, 1.9, 0.0, -1.0]])
    text = torch.tensor([[0.0, 2.0, 0.0, 0.0]])
    out = combiner(None, torch.cat([original, text]))
    lo, lt = original.log_softmax(-1), text.log_softmax(-1)
    expected = 2 * lo - lt
    keep = lo >= lo.max() + math.log(0.5)  # tokens 0 and 1 survive the cutoff
    expected = expected.masked_fill(~keep, -math.inf)
    torch.testing.assert_close(out[:1], expected)
    torch.testing.assert_close(out[1:], expected)  # both views receive the same scores
    assert out[0].argmax() == 0  # the contrast flips token 1 (text-prior) below token 0


def test_combiner_does_not_modify_scores_in_place():
    scores = torch.randn(4, 7)
    copy = scores.clone()
    combiner_for(TextContrast(), ["text"])(None, scores)
    assert torch.equal(scores, copy)


def test_sampler_draws_once_per_sample_for_all_views():
    sampler = Sampler(Decoding(do_sample=True, seed=3), torch.device("cpu"))
    combiner = BranchCombiner([ORIGINAL, "a", "b"], [Combination("x", {}, lambda v: v[ORIGINAL])], sampler)
    out = combiner(None, torch.randn(6, 50))  # 3 views x 2 samples
    chosen = out.argmax(-1).view(3, 2)
    assert (chosen == chosen[0]).all()
    assert torch.isfinite(out).sum() == 6


def test_merge_inputs_left_pads_sequences_and_concatenates_pixels():
    a = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
         "pixel_values": torch.zeros(1, 3, 4, 4)}
    b = {"input_ids": torch.tensor([[8]]), "attention_mask": torch.ones(1, 1, dtype=torch.long)}
    merged = merge_inputs([a, b], pad_token_id=0)
    assert merged["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert merged["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert merged["pixel_values"].shape == (1, 3, 4, 4)


@pytest.mark.parametrize("name", FAMILIES)
def test_alpha_zero_without_cutoff_equals_vanilla(tiny_models, images, name):
    lvlm = tiny_models(name)
    prompts = ["What is in the image?", "Describe it."]
    vanilla = halluc.generate(lvlm, images, prompts, max_new_tokens=5)
    assert halluc.generate(lvlm, images, prompts, "test-textcontrast", alpha=0.0, beta=0.0,
                           max_new_tokens=5) == vanilla


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_and_sampling_run_and_batch_equals_single(tiny_models, images, name):
    lvlm = tiny_models(name)
    prompts = ["What is in the image?", "Describe it."]
    for kwargs in (dict(), dict(do_sample=True, seed=5)):
        batch = halluc.generate(lvlm, images, prompts, "test-textcontrast", alpha=2.0, max_new_tokens=5, **kwargs)
        singles = [halluc.generate(lvlm, [images[i]], [prompts[i]], "test-textcontrast", alpha=2.0,
                                   max_new_tokens=5, **kwargs)[0] for i in range(2)]
        if not kwargs:  # sampling draws per row from one generator, so only greedy is batch-invariant
            assert batch == singles


def test_beam_search_with_branches_runs(tiny_llava, images):
    assert len(halluc.generate(tiny_llava, images, ["What?", "Say"], "test-textcontrast", num_beams=2,
                               max_new_tokens=4)) == 2


def test_each_view_keeps_its_own_cache(tiny_llava, images):
    """Logits a branch row sees at every step equal that branch run alone on the same tokens."""
    register(Recorder)
    try:
        seen: list = []
        result = halluc.generate(tiny_llava, [images[0]], ["What is in the image?"], "test-recorder",
                                 alpha=1.0, seen=seen, max_new_tokens=5, return_scores=True)
    finally:
        unregister(Recorder.name)
    tokens = result.tokens[0]
    adapter, processor, model = tiny_llava.adapter, tiny_llava.processor, tiny_llava.model
    for view, inputs in ((ORIGINAL, adapter.build_inputs(processor, [halluc.api.load_images(images[:1])[0]],
                                                          ["What is in the image?"])),
                         ("text", adapter.build_inputs(processor, None, ["What is in the image?"]))):
        ids = torch.cat([inputs["input_ids"], torch.tensor([tokens[:-1]])], dim=1)
        full = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
        with torch.no_grad():
            logits = model(**full).logits[0, -len(tokens):]  # (steps, V)
        for step in range(len(tokens)):
            torch.testing.assert_close(seen[step][view][0], logits[step].float().log_softmax(-1), atol=1e-4, rtol=1e-4)


def test_stacked_combinations_sum_their_contributions_and_apply_every_cutoff():
    g = torch.Generator().manual_seed(0)
    views = {name: torch.randn(2, 9, generator=g).log_softmax(-1) for name in (ORIGINAL, "a:x", "b:y")}
    first = Combination("a", {"x": "a:x"}, lambda v: 2 * v[ORIGINAL] - v["x"], cutoff=0.05)
    second = Combination("b", {"y": "b:y"}, lambda v: v[ORIGINAL] + 3 * v["y"], cutoff=0.2)
    o = views[ORIGINAL]
    expected = (2 * o - views["a:x"]) + 3 * views["b:y"]
    expected = expected.masked_fill(o < o.max(-1, keepdim=True).values + math.log(0.2), -math.inf)
    torch.testing.assert_close(combine_views(views, [first, second]), expected)
    alone = combine_views(views, [first])  # one combination is used exactly as it is
    torch.testing.assert_close(alone, (2 * o - views["a:x"]).masked_fill(
        o < o.max(-1, keepdim=True).values + math.log(0.05), -math.inf))


def test_view_layout_rows_and_sample_index():
    layout = ViewLayout((ORIGINAL, "vcd:noised", "ritual:transformed"), samples=2)
    assert layout.rows("vcd:noised") == slice(2, 4)
    assert layout.per_input(12) == 2  # two beams per input row
    assert layout.input_index(12).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert layout.sample_index(12).tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1]
    with pytest.raises(HallucError, match="does not expand"):
        layout.per_input(7)
    with pytest.raises(KeyError, match="no view"):
        layout.rows("damro:outliers")


@dataclass(frozen=True)
class PromptContrast(Method):
    """Test method: contrast with a view whose prompt (and system text) changed."""

    name = "test-promptcontrast"
    kind = "decoding"
    alpha: float = param(1.0, low=0.0)
    system: str = param("")

    def branches(self, request):
        return [Branch("changed", prompt=lambda text, i: f"{text} Ignore the image.", system=self.system or None)]

    def combine(self, views):
        return (1 + self.alpha) * views[ORIGINAL] - self.alpha * views["changed"]


@pytest.mark.parametrize("name", FAMILIES)
def test_prompt_changing_branch_sees_exactly_the_changed_prompt(tiny_models, images, name):
    """A contrast with α = −1 is the changed view alone: its greedy answer equals plainly generating
    the changed prompt (and system text), so the branch's rows are exactly that prompt."""
    lvlm = tiny_models(name)
    prompts = ["What is in the image?", "Describe it."]
    register(PromptContrast)
    try:
        for system in ("", "You are a careful assistant."):
            got = halluc.generate(lvlm, images, prompts, "test-promptcontrast", alpha=0.0, system=system,
                                  max_new_tokens=4)
            assert got == halluc.generate(lvlm, images, prompts, max_new_tokens=4)  # α = 0: the original view
            contrast = PromptContrast(alpha=1.0, system=system)
            views = halluc.generate(lvlm, images, prompts, contrast, max_new_tokens=1, return_scores=True).scores
            changed = [p + " Ignore the image." for p in prompts]
            plain = halluc.generate(lvlm, images, prompts, max_new_tokens=1, return_scores=True).scores
            inputs = lvlm.adapter.build_inputs(lvlm.processor, halluc.api.load_images(images), changed,
                                               system=system or None)
            with torch.no_grad():
                direct = lvlm.model(**inputs).logits[:, -1].float().log_softmax(-1)
            expected = 2 * plain[:, 0].log_softmax(-1) - direct
            torch.testing.assert_close(views[:, 0], expected, atol=2e-4, rtol=1e-4)
    finally:
        unregister(PromptContrast.name)


def test_two_branch_methods_stack_and_ritual_vcd_is_their_alias(tiny_llava, images):
    prompts = ["What is in the image?", "Describe it."]
    stacked = halluc.generate(tiny_llava, images, prompts, ["ritual", "vcd"], max_new_tokens=5)
    assert halluc.generate(tiny_llava, images, prompts, "ritual-vcd", max_new_tokens=5) == stacked
    with pytest.raises(HallucError, match="listed twice"):
        halluc.generate(tiny_llava, images, prompts, ["ritual-vcd", "vcd"], max_new_tokens=2)


def test_a_method_may_choose_its_cutoff_per_decoding_mode(tiny_llava):
    from halluc.generation.generate import _combiner

    @dataclass(frozen=True)
    class GreedyWithoutCutoff(TextContrast):
        def plausibility_cutoff_for(self, decoding):
            return None if decoding.mode == "greedy" else self.beta

    method = GreedyWithoutCutoff(beta=0.3)
    layout = ViewLayout((ORIGINAL, "test-textcontrast:text"), 1)
    declared = [(method, [Branch("text", with_image=False)])]
    cutoffs = {mode: _combiner(declared, layout, decoding, tiny_llava)[0].combinations[0].cutoff
               for mode, decoding in [("greedy", Decoding()), ("sample", Decoding(do_sample=True)),
                                      ("beam", Decoding(num_beams=2))]}
    assert cutoffs == {"greedy": None, "sample": 0.3, "beam": 0.3}
    assert TextContrast(beta=0.3).plausibility_cutoff_for(Decoding()) == 0.3  # default: the same in every mode
