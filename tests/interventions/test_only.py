"""ONLY: the side branch from layer ℓ̃'s text-enhanced attention through the last FFN, the adaptive
collaborate / contrast rule and the cutoff; per-step logits on toy-llava against a hand-written forward."""
import math

import pytest
import torch

import halluc
from halluc.engine.regions import region_entropy, region_outliers, text_region
from halluc.engine.views import ORIGINAL, Branch, build_view_batch, qualified_view
from halluc.interventions import attach
from halluc.interventions.only import (
    ONLY,
    adaptive_logits,
    enhanced_attention,
)
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, first_logits, make_session
from tests.interventions.manual_lm import Edits, ManualLM

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 3))


def test_outliers_entropy_and_head_selection_on_hand_made_rows():
    row = torch.tensor([[[0.1, 0.05, 0.05, 0.6, 0.05, 0.15]]])  # (B=1, H=1, Tk=6)
    image = torch.tensor([[False, False, False, True, True, True]])
    text = torch.tensor([[False, True, True, False, False, False]])  # column 0 is the sink: in neither
    regions = torch.stack([text, image], 1)  # (B, 2, Tk)
    # image region: mean 0.2667, std (unbiased) 0.2930 -> only 0.6 is an outlier; text: 0.05, 0.05, none
    assert region_outliers(row, regions)[0, 0].tolist() == [False, False, False, True, False, False]
    assert not region_outliers(row, text[:, None]).any()
    cleaned = enhanced_attention(row, regions)
    torch.testing.assert_close(cleaned, torch.tensor([[[0.1, 0.05, 0.05, 0.0, 0.05, 0.15]]]))  # not renormalised
    p = torch.tensor([0.25, 0.75])
    torch.testing.assert_close(region_entropy(cleaned, regions)[0, 0, 1], -(p * (p + 1e-6).log()).sum())
    # a second head: text entropy of (0.9375, 0.0625) = 0.234 over image entropy of (.345, .345, .310) = 1.097
    # is 0.21, head 0's is ln 2 / 0.562 = 1.23: the second is below the mean (0.72) and zeroed entirely
    two = torch.stack([row[0, 0], torch.tensor([0.1, 0.3, 0.02, 0.2, 0.2, 0.18])])[None]
    kept = enhanced_attention(two, regions)
    torch.testing.assert_close(kept[0, 0], cleaned[0, 0])
    assert kept[0, 1].abs().sum() == 0


def test_text_region_drops_padding_image_and_each_rows_first_token():
    image = torch.tensor([[False, False, True, True, False], [False, False, False, True, False]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert text_region(image, mask).tolist() == [[False, True, False, False, True], [False, False, True, False, True]]


def test_adaptive_rule_and_cutoff_on_planted_logits():
    z = torch.tensor([[2.0, 1.0, -3.0], [2.0, 1.0, -3.0]])
    close, far = z + 0.01, torch.tensor([[-3.0, 1.0, 2.0]])
    collaborate = adaptive_logits(z[:1], close[:1], 3.0, 1.0, 0.2, 0.0)
    torch.testing.assert_close(collaborate, z[:1] + 3 * close[:1])
    contrast = adaptive_logits(z[:1], far, 3.0, 1.0, 0.2, 0.0)
    torch.testing.assert_close(contrast, 2 * z[:1] - far)
    cut = adaptive_logits(z[:1], far, 3.0, 1.0, 0.2, 0.1)  # exp(-3 - 2) < 0.1: token 2 dropped
    assert cut[0, 2] == -math.inf and torch.isfinite(cut[0, :2]).all()
    removed = adaptive_logits(torch.tensor([[2.0, -math.inf, 0.0]]), far, 3.0, 1.0, 0.2, 0.0)
    assert removed[0, 1] == -math.inf and not removed.isnan().any()  # another edit's −inf stays, no NaN


def literal_only(toy, inputs, tokens, gamma, alpha_pos=3.0, alpha_neg=1.0, beta=0.1):
    """The spec's §1.1, read literally on one sample: per step the regular logits z and ONLY's s."""
    ids = inputs["input_ids"][0]
    image = ids == toy.model.config.image_token_id
    first, end = image.nonzero()[0, 0].item(), image.nonzero()[-1, 0].item() + 1
    last_layer = toy.model.model.language_model.layers[-1]
    seen = {}

    def probs(layer, p, v):
        if layer == 0:
            seen["p"], seen["v"] = p[0, :, -1], v[0]  # (H, Tk), (H, Tk, D)

    def layer_out(layer, h):
        if layer == len(toy.model.model.language_model.layers) - 2:
            seen["x"] = h[0, -1]  # the residual input of the last layer

    def side_logits(z):
        p, v = seen["p"].clone(), seen["v"]
        tk = p.shape[-1]
        text = list(range(1, first)) + list(range(end, tk))  # BOS (column 0) in neither region
        image_cols = list(range(first, end))
        for h in range(p.shape[0]):
            for region in (text, image_cols):
                values = p[h, region]
                limit = values.mean() + values.std()
                p[h, region] = torch.where(values > limit, 0.0, values)
        ratio = []
        for h in range(p.shape[0]):
            entropy = []
            for region in (text, image_cols):
                q = p[h, region] / p[h, region].sum()
                entropy.append(-(q * torch.log(q + 1e-6)).sum())
            e_text = 0.0 if entropy[0].isnan() else entropy[0]
            e_image = math.inf if entropy[1].isnan() else entropy[1]
            ratio.append(e_text / e_image)
        ratio = torch.tensor(ratio)
        p[ratio < ratio.mean()] = 0.0
        heads = torch.cat([p[h] @ v[h].float() for h in range(p.shape[0])])  # concat_h(P̃_h · V_h)
        with torch.no_grad():
            a_cd = toy.model.model.language_model.layers[0].self_attn.o_proj(heads)
            u = last_layer.input_layernorm(a_cd) + 0.2 * seen["x"]
            u = u + last_layer.mlp(last_layer.post_attention_layernorm(u))
            n_cd = toy.model.model.language_model.norm(u)
            return toy.model.lm_head(n_cd + 0.5 * toy.model.model.language_model.norm(seen["final"])).float()

    assert toy.model.lm_head.bias is None  # so W_lm(n_cd + 0.5·norm(h)) = W_lm·n_cd + 0.5·z
    manual = ManualLM(toy)
    edits = Edits(probs=probs, layer_out=layer_out)
    hidden = manual.forward(manual.embeddings(inputs), edits)
    out, distances = [], []
    for token in tokens:
        seen["final"] = hidden[0]
        z = manual.logits(hidden)[0]
        z_cd = side_logits(z)
        d = (z.softmax(-1) - z_cd.softmax(-1)).abs().sum()
        s = z + alpha_pos * z_cd if d < gamma else (1 + alpha_neg) * z - alpha_neg * z_cd
        s = torch.where(z < math.log(beta) + z.max(), -math.inf, s) if beta > 0 else s
        out.append(s)
        distances.append(d.item())
        hidden = manual.forward(manual.token_embedding(token), edits)
    return torch.stack(out), distances


@pytest.mark.parametrize("gamma", [0.2, 0.0, 2.0], ids=["pope-default", "always-contrast", "always-collaborate"])
def test_per_step_logits_match_a_literal_reading_of_the_code(toy, scene, gamma):
    prompt = "Describe this image."
    got = halluc.generate(toy, [scene], [prompt], "only", gamma=gamma, max_new_tokens=STEPS, return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    want, distances = literal_only(toy, inputs, got.tokens[0], gamma)
    torch.testing.assert_close(got.scores[0, :len(want)], want, atol=1e-4, rtol=1e-4)
    assert got.tokens[0] == want.argmax(-1).tolist()
    # γ = 0 and γ = 2 (the L1 distance is at most 2) force each branch at every step; on this caption
    # the default γ = 0.2 contrasts (toy-llava's side branch is far from its regular prediction)
    assert all(d <= 2.0 for d in distances)


def test_zero_is_the_identity_and_each_weight_acts(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "only", **ONLY.zero_params), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "only", gamma=2.0, beta=0.0), vanilla)
    assert ONLY(alpha_pos=0.0, alpha_neg=0.0, beta=0.0).is_identity() and not ONLY().is_identity()


@pytest.mark.parametrize("other", ["vcd", "ritual", "vhr", "vista"])
def test_stacks_with_in_model_and_decoding_methods(tiny_llava, images, other):
    texts = halluc.generate(tiny_llava, images, PROMPTS, ["only", other], max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    scores = halluc.generate(tiny_llava, images, PROMPTS, [other, "only"], max_new_tokens=2, return_scores=True).scores
    assert not scores.isnan().any()


def test_only_the_original_view_is_rewritten(tiny_llava, images):
    model, adapter, processor = tiny_llava.model, tiny_llava.adapter, tiny_llava.processor
    pil = halluc.api.load_images(images)
    view = qualified_view("vcd", "noised")  # a contrast view of another method: same inputs here
    batch = build_view_batch(adapter, processor, pil, PROMPTS, [Branch(view)])
    session = make_session(tiny_llava, batch, pil, PROMPTS, views=(ORIGINAL, view))
    with attach(session, [ONLY(gamma=2.0, beta=0.0)]), torch.no_grad():
        logits = model(**batch).logits[:, -1]  # (4, V): original rows, then the view's
    with torch.no_grad():
        plain = model(**batch).logits[:, -1]
    torch.testing.assert_close(logits[2:], plain[2:])
    assert not torch.allclose(logits[:2], plain[:2], atol=1e-3)
