"""TAME as released: queries and keys times e before RoPE, scores divided by √d·σ, in every layer. Per-step
logits on toy-llava against a hand-written forward that scales q and k literally; the score scale in the
attention backend (SDPA at another temperature, composed with other edits, switched off in auxiliary
passes); stacking."""
import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions.tame import TAME, score_factor
from halluc.kernels import AttentionEdit, ScoreBoost, attention_reference
from halluc.kernels.backend import active_edits, halluc_attention, register_backend
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, batch_and_singles, first_logits
from tests.interventions.manual_lm import Edits, ManualLM

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 5))


def code_forward(toy, inputs, tokens, expansion: float, suppression: float, vaf_scores=None) -> list[torch.Tensor]:
    """The official forward by hand: every layer's q_proj and k_proj outputs times e (before RoPE: the
    projections feed the rotary embedding), the scores q·kᵀ/√d divided by σ; the prompt, then `tokens`.
    The cached keys are the scaled ones, as in the code. Returns the (V,) logits before each token."""
    manual = ManualLM(toy)
    projections = [m for layer in manual.lm.layers for m in (layer.self_attn.q_proj, layer.self_attn.k_proj)]

    def scores(layer, s, positions):
        s = s / suppression
        return vaf_scores(layer, s, positions) if vaf_scores is not None else s

    embeddings = manual.embeddings(inputs)  # before the hooks: the model's own forward builds them
    handles = [m.register_forward_hook(lambda mod, args, out: out * expansion) for m in projections]
    try:
        hidden = manual.forward(embeddings, Edits(scores=scores))
        logits = []
        for token in tokens:
            logits.append(manual.logits(hidden)[0])
            hidden = manual.forward(manual.token_embedding(token), Edits(scores=scores))
    finally:
        for handle in handles:
            handle.remove()
    return logits


@pytest.mark.parametrize("expansion,suppression", [(1.3, 1.0), (1.2, 1.1)])
def test_per_step_logits_match_the_code_scaling_queries_and_keys(toy, scene, expansion, suppression):
    prompt = "Describe this image."
    got = halluc.generate(toy, [scene], [prompt], "tame", max_new_tokens=STEPS, return_scores=True,
                          expansion=expansion, suppression=suppression)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    expected = code_forward(toy, inputs, got.tokens[0], expansion, suppression)
    for step, logits in enumerate(expected):
        torch.testing.assert_close(got.scores[0, step], logits, atol=1e-4, rtol=1e-4)
    plain = halluc.generate(toy, [scene], [prompt], max_new_tokens=1, return_scores=True).scores[0, 0]
    assert not torch.allclose(got.scores[0, 0], plain, atol=1e-3)


def test_stacked_with_vaf_both_scale_the_same_scores(toy, scene):
    """TAME and VAF edit the same layers (0..1 of toy-llava's 3): VAF's factors act on TAME's scaled scores."""
    prompt = "Describe this image."
    got = halluc.generate(toy, [scene], [prompt], ["tame", "vaf"], max_new_tokens=4, return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    ids = inputs["input_ids"][0]
    image = ids == toy.model.config.image_token_id
    first, end = image.nonzero()[0, 0], image.nonzero()[-1, 0] + 1
    system = torch.arange(len(ids)) < first

    def vaf(layer, s, positions):
        if layer not in (0, 1):
            return s
        factor = torch.ones(s.shape[-1])
        factor[:len(ids)][image] = 1.15
        factor[:len(ids)][system] = 0.95
        return torch.where((positions >= end)[None, None, :, None], s * factor, s)

    expected = code_forward(toy, inputs, got.tokens[0], 1.3, 1.0, vaf_scores=vaf)
    for step, logits in enumerate(expected):
        torch.testing.assert_close(got.scores[0, step], logits, atol=1e-4, rtol=1e-4)


def test_identity_at_one_and_each_factor_acts(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "tame", expansion=1.0, suppression=1.0), vanilla)
    assert TAME(expansion=1.0).is_identity() and TAME(expansion=1.1, suppression=1.21).factor == pytest.approx(1.0)
    assert not torch.allclose(first_logits(tiny_llava, images, "tame"), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "tame", expansion=1.0, suppression=0.8), vanilla)
    same = first_logits(tiny_llava, images, "tame", expansion=2.0 ** 0.5, suppression=1.0)  # e²/σ = 2 both ways
    torch.testing.assert_close(first_logits(tiny_llava, images, "tame", expansion=1.0, suppression=0.5), same)


def test_layers_and_parameters_are_validated():
    assert TAME().chosen_layers(4) == (0, 1, 2, 3) and TAME(layers=[2, 1]).chosen_layers(4) == (1, 2)
    assert score_factor(1.3, 1.0) == pytest.approx(1.69)
    with pytest.raises(HallucError, match="layer 5 does not exist"):
        TAME(layers=[5]).chosen_layers(2)
    for bad in ({"expansion": 0.0}, {"suppression": -1.0}, {"expansion": "1.3"}, {"layers": [-1]},
                {"expansion": 1e6, "suppression": 1e-320}):
        with pytest.raises(HallucError, match="tame"):
            TAME(**bad)


def test_batch_equals_single_under_beam_search(tiny_llava, images):
    prompts = ["What is in the image? Describe it briefly.", "Hi"]  # left padding
    batch, singles = batch_and_singles(tiny_llava, images, "tame", prompts=prompts, max_new_tokens=4, num_beams=2)
    assert batch == singles


# ---- the score scale in the backend --------------------------------------------------------------------
@pytest.fixture(scope="module")
def attention_module(tiny_llava):
    register_backend()
    return tiny_llava.adapter.attention(tiny_llava.model, 0)


def qkv(tq: int, tk: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 4, tq, 16, generator=g)
    k, v = torch.randn(2, 2, tk, 16, generator=g), torch.randn(2, 2, tk, 16, generator=g)
    return q, k, v


def test_a_scale_alone_is_sdpa_at_another_temperature(attention_module):
    q, k, v = qkv(5, 5)
    scaling = attention_module.scaling
    with torch.no_grad(), active_edits({attention_module: AttentionEdit(scale=1.69)}):
        out, weights = halluc_attention(attention_module, q, k, v, None, scaling=scaling)
    reference = attention_reference(q, k, v, None, scaling=1.69 * scaling)
    torch.testing.assert_close(out, reference.out, atol=1e-5, rtol=1e-5)
    assert weights is None and AttentionEdit(scale=1.69).scale_only and not AttentionEdit(scale=1.69).is_noop()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_a_scale_must_be_a_finite_positive_factor(bad):
    with pytest.raises(ValueError, match="AttentionEdit.scale must be a finite positive factor"):
        AttentionEdit(scale=bad)


def test_scales_compose_with_another_edit_and_inner_blocks_switch_them_off(attention_module):
    q, k, v = qkv(1, 6)  # a decode call
    scaling = attention_module.scaling
    columns = torch.tensor([[False, True, True, False, False, False]] * 2)
    boost = AttentionEdit(columns=columns, boost=ScoreBoost(0.5), return_attention_row=True)
    with torch.no_grad(), active_edits({attention_module: boost}, scales={attention_module: 1.5}):
        out, _ = halluc_attention(attention_module, q, k, v, None, scaling=scaling)
        with active_edits({attention_module: AttentionEdit()}):  # an auxiliary pass: nothing edited
            plain, _ = halluc_attention(attention_module, q, k, v, None, scaling=scaling)
    expected = attention_reference(q, k, v, None, scaling=1.5 * scaling,
                                   edit=AttentionEdit(columns=columns, boost=ScoreBoost(0.5)))
    torch.testing.assert_close(out, expected.out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, attention_reference(q, k, v, None, scaling=scaling).out, atol=1e-5, rtol=1e-5)


def test_attention_sharpens_monotonically_with_the_expansion(attention_module):
    """Row entropy of the final attention falls as e grows (a softmax at a lower temperature)."""
    q, k, v = qkv(1, 12, seed=3)
    entropies = []
    for e in (1.0, 1.1, 1.3, 1.6, 2.0):
        edit = AttentionEdit(scale=score_factor(e, 1.0), return_attention_row=True)
        with torch.no_grad(), active_edits({attention_module: edit}):
            halluc_attention(attention_module, q, k, v, None, scaling=attention_module.scaling)
        row = edit.record.attention_row  # (B, H, Tk)
        entropies.append(-(row * row.clamp_min(1e-30).log()).sum(-1))
    for lower, higher in zip(entropies, entropies[1:]):
        assert (higher < lower).all()


# ---- stacking ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("others", [["pai"], ["sid", "vcd"], ["vhr", "vcd"]], ids="+".join)
def test_stacks_with_edits_on_the_same_layers_and_branches(toy, scene, others):
    out = halluc.generate(toy, [scene], ["Describe this image."], ["tame", *others], max_new_tokens=3,
                          return_scores=True)
    assert out.scores.isfinite().any(-1).all() and not out.scores.isnan().any()
    alone = halluc.generate(toy, [scene], ["Describe this image."], others, max_new_tokens=3, return_scores=True)
    assert not torch.allclose(out.scores, alone.scores)  # TAME's scale acts inside the stack


def test_stacks_with_opera_and_its_own_edit_on_the_last_layer(toy, scene):
    """OPERA's search reads the last layer's attention rows through an edit there, which TAME's scale joins."""
    scenes = [render_scene(scene_at(TRAIN_WORLD, "val", i)) for i in range(4)]
    opera, both = (halluc.generate(toy, scenes, ["Describe this image."] * 4, methods, max_new_tokens=12,
                                   preset="fast") for methods in (["opera"], ["opera", "tame"]))
    assert len(both) == 4 and all(isinstance(t, str) and t for t in both)
    assert opera != both  # the scale reaches the search's own forwards (toy-llava: 4 of 4 captions change)


def test_stacking_changes_what_the_other_method_gives(tiny_llava, images):
    params = {"layers": [0, 1]}  # PAI's default layers 2..L−1 are empty on 2 layers
    pai = halluc.generate(tiny_llava, images, PROMPTS, "pai", max_new_tokens=1, return_scores=True, **params)
    both = halluc.generate(tiny_llava, images, PROMPTS, ["pai", "tame"], max_new_tokens=1, return_scores=True,
                           **{"pai.layers": params["layers"]})
    assert not torch.allclose(pai.scores, both.scores)
