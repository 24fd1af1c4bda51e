"""AGLA: the relevance mask, both matchers (LVLM attention checked against eager attention, BLIP's GradCAM on a
tiny random checkpoint), offline behaviour, the formula, identity, per-view caches, every family."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

import halluc
from halluc.engine import matchers
from halluc.engine.image_views import gaussian_blur, mask_image, visible_box
from halluc.engine.matchers import blip_match, lvlm_attention_match
from halluc.engine.views import ORIGINAL
from halluc.errors import HallucError
from halluc.images import load_image
from halluc.interventions.agla import AGLA
from halluc.kernels.backend import current_edits
from halluc.modeling import registry
from halluc.modeling.lvlm import LVLM
from halluc.modeling.tiny import build_tiny
from tests.helpers import combiner_for, hook_count, views_match_alone

PROMPTS = ["What is in the image?", "Describe it."]
GRID_FAMILIES = ["tiny-llava", "tiny-llava-next", "tiny-qwen2-vl", "tiny-qwen2.5-vl"]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> str:
    """A random BLIP ITM checkpoint (32 px, 4x4 patches) saved like a real one."""
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipProcessor
    from transformers.models.blip import BlipImageProcessorPil

    folder = tmp_path_factory.mktemp("blip")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "in", "the", "image", "describe", "it", "?"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 initializer_range=0.5)
    config = BlipConfig(text_config=dict(vocab_size=len(words), **small),
                        vision_config=dict(image_size=32, patch_size=8, **small), image_text_hidden_size=16)
    torch.manual_seed(0)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}),
                  BertTokenizer(vocab_file=str(folder / "vocab.txt"))).save_pretrained(folder)
    return str(folder)


def test_mask_keeps_the_top_share_of_pixels_around_the_relevant_cells():
    image = Image.new("RGB", (40, 32), (255, 255, 255))
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    scores = -(rows + cols)  # the prompt is about the top-left corner
    masked = mask_image(image, scores, keep=0.25)
    kept = torch.from_numpy(np.array(masked)).sum(-1) > 0
    assert kept.float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert masked.getpixel((1, 1)) == (255, 255, 255) and masked.getpixel((39, 31)) == (0, 0, 0)
    boxed = mask_image(image, scores, keep=0.5, box=(10, 0, 30, 32))  # only the box is masked
    assert boxed.getpixel((2, 30)) == (255, 255, 255) and boxed.getpixel((38, 30)) == (255, 255, 255)
    assert boxed.getpixel((11, 1)) == (255, 255, 255) and boxed.getpixel((29, 31)) == (0, 0, 0)


def test_gaussian_blur_is_the_normalised_gaussian():
    delta = torch.zeros(41, 41)
    delta[20, 20] = 1.0
    out = gaussian_blur(delta, sigma=2.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    expected = math.exp(-0.5 * (3 / 2.0) ** 2) / math.exp(0)  # ratio of the profile at distance 3 and 0
    assert (out[20, 23] / out[20, 20]).item() == pytest.approx(expected, rel=1e-3)
    torch.testing.assert_close(out, out.T)


def test_visible_box_is_the_center_crop_of_clip_processors(tiny_models):
    llava = tiny_models("tiny-llava").processor.image_processor  # shortest edge 28, center crop 28
    assert visible_box(llava, (40, 32)) == (4, 0, 36, 32)
    assert visible_box(llava, (30, 60)) == (0, 15, 30, 45)
    assert visible_box(tiny_models("tiny-qwen2-vl").processor.image_processor, (40, 32)) == (0, 0, 40, 32)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_lvlm_attention_map_equals_eager_attention(images, family):
    """The map recomputed from q/k in a pre-hook equals transformers' eager attention probabilities."""
    model, processor = build_tiny(family, attn_implementation="eager")
    lvlm = LVLM(model, processor, registry.family(family).adapter, f"tiny-{family}-eager")
    image = load_image(images[1])
    match = lvlm_attention_match(lvlm, image, PROMPTS[0], layer=1)
    inputs = lvlm.adapter.build_inputs(processor, [image], [PROMPTS[0]])
    span = lvlm.adapter.image_spans(model, inputs)[0][0]
    with torch.no_grad():
        attn = model(**inputs, output_attentions=True).attentions[1]  # (1, H, T, T)
    first_text = int(span.positions.max()) + 1
    expected = attn[0, :, first_text:].mean((0, 1))[span.positions].view(span.grid)
    torch.testing.assert_close(match.scores, expected, atol=1e-5, rtol=1e-4)
    assert match.box == visible_box(processor.image_processor, image.size)


def test_blip_matcher_gradcam_and_itc_on_a_tiny_checkpoint(tiny_blip, images):
    match = blip_match(load_image(images[0]), "What is in the image?", tiny_blip)
    assert match.scores.shape == (4, 4) and torch.isfinite(match.scores).all()
    assert (match.scores >= 0).all()  # attention x clamped gradient
    assert -1 <= match.itc <= 1 and match.box == (0, 0, 40, 32)


def test_missing_blip_is_refused_or_falls_back_clearly(tiny_models, tiny_llava, images, tmp_path):
    missing = str(tmp_path / "no-blip")
    with pytest.raises(HallucError, match="not available offline"):
        halluc.generate(tiny_llava, images, PROMPTS, "agla", matcher="blip", matcher_model=missing, max_new_tokens=2)
    with pytest.warns(UserWarning, match="falls back to matcher='lvlm-attention'"):
        auto = halluc.generate(tiny_llava, images, PROMPTS, "agla", matcher_model=missing, max_new_tokens=3)
    assert auto == halluc.generate(tiny_llava, images, PROMPTS, "agla", matcher="lvlm-attention", max_new_tokens=3)
    with pytest.raises(HallucError, match="needs 2-D image grids, which the instructblip adapter does not provide"):
        halluc.generate(tiny_models("tiny-instructblip"), images, PROMPTS, "agla", matcher="lvlm-attention")


def test_formula_and_cutoff_on_planted_log_probs():
    method = AGLA(alpha=2.0, beta=0.5)
    original = torch.tensor([[2.0, 1.9, 0.0, -1.0]])
    augmented = torch.tensor([[0.0, 3.0, 0.0, 0.0]])
    out = combiner_for(method, ["augmented"])(
        None, torch.cat([original, augmented]))
    lo, la = original.log_softmax(-1), augmented.log_softmax(-1)
    torch.testing.assert_close(out[1:], (lo + 2 * la).masked_fill(lo < lo.max() + math.log(0.5), -math.inf))



def test_no_hooks_left_after_an_error_inside_the_matcher(tiny_llava, images, monkeypatch):
    before = hook_count(tiny_llava.model)
    monkeypatch.setattr(matchers, "_text_to_key_attention", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):  # raised inside the matcher's forward hook
        halluc.generate(tiny_llava, images, PROMPTS, "agla", matcher="lvlm-attention")
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}


def test_augmented_view_keeps_its_own_cache(tiny_llava, images):
    """The released code's bug: the augmented branch reused the original cache after the first token."""
    image, prompt = load_image(images[0]), PROMPTS[0]
    augmented = AGLA().augment(tiny_llava, image, prompt, "lvlm-attention")
    assert augmented.tobytes() != image.tobytes()
    inputs = {view: tiny_llava.adapter.build_inputs(tiny_llava.processor, [img], [prompt])
              for view, img in ((ORIGINAL, image), ("augmented", augmented))}
    views_match_alone(tiny_llava, AGLA, image, prompt, inputs, matcher="lvlm-attention")


@pytest.mark.parametrize("name", [*GRID_FAMILIES, "tiny-instructblip"])
def test_blip_matcher_on_every_family_and_batch_equals_single(tiny_models, images, tiny_blip, name):
    """The contract tests run the lvlm-attention matcher; the BLIP matcher (a tiny local checkpoint) too,
    on InstructBLIP as well, whose Q-Former queries have no 2-D layout for lvlm-attention."""
    lvlm = tiny_models(name)
    params = dict(matcher="blip", matcher_model=tiny_blip)
    batch = halluc.generate(lvlm, images, PROMPTS, "agla", max_new_tokens=4, **params)
    assert batch == [halluc.generate(lvlm, [images[i]], [PROMPTS[i]], "agla", max_new_tokens=4, **params)[0]
                     for i in range(2)]
    assert len(halluc.generate(lvlm, images, PROMPTS, "agla", do_sample=True, seed=3, max_new_tokens=4, **params)) == 2


def test_beam_search_through_the_engine(tiny_llava, images):
    assert len(halluc.generate(tiny_llava, images, PROMPTS, "agla", matcher="lvlm-attention", num_beams=3,
                               max_new_tokens=4)) == 2


def test_blip_matcher_cache_can_be_cleared(tiny_blip, images):
    blip_match(load_image(images[0]), "what is it", tiny_blip)
    assert matchers.load_blip.cache_info().currsize >= 1
    matchers.clear_matcher_cache()
    assert matchers.load_blip.cache_info().currsize == 0


def test_matches_run_batched_by_shape_and_equal_each_pair_alone(tiny_llava, images, monkeypatch):
    """Pairs whose inputs have the same shapes share one forward (stopped at the layer); every match equals
    the pair's own match."""
    from halluc.engine.matchers import lvlm_attention_matches

    imgs = [load_image(images[i]) for i in (0, 1, 0, 0)]
    prompts = ["Is there a dog?", "Is there a cat?", "Is there a cow?", "Describe the picture in a few words."]
    calls = {"lm": 0}
    lm = tiny_llava.adapter.attention(tiny_llava.model, 0)
    handles = [lm.register_forward_pre_hook(lambda *a: calls.__setitem__("lm", calls["lm"] + 1))]
    lengths = {len(tiny_llava.processor.tokenizer(p).input_ids) for p in prompts}
    try:
        batched = lvlm_attention_matches(tiny_llava, imgs, prompts, layer=1)
    finally:
        for handle in handles:
            handle.remove()
    assert calls["lm"] == len(lengths) < len(prompts)  # one forward per shape
    alone = [lvlm_attention_match(tiny_llava, i, p, layer=1) for i, p in zip(imgs, prompts)]
    for got, want in zip(batched, alone):
        torch.testing.assert_close(got.scores, want.scores, atol=1e-6, rtol=1e-5)
        assert got.box == want.box
