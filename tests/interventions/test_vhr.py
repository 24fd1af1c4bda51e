"""VHR: VHD + outlier filter + median selection, layer-by-layer reinforcement, one text-only pass."""
import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions import attach
from halluc.interventions.vhr import VHR, default_layers, select_heads
from halluc.kernels.backend import current_edits
from tests.helpers import PROMPTS, first_logits, hook_count, make_session, settled_hook_count


def test_select_heads_vhd_filter_and_median_on_planted_outputs():
    text = torch.zeros(1, 8, 4)
    text[0, 0] = 10.0  # head 0: large text-only output (TA = 400) ...
    image = text.clone()
    vhd = torch.tensor([50.0, 1.0, 4.0, 0.5, 3.0, 0.2, 2.0, 0.1])
    image[0, :, 0] += vhd  # ... and a surging VHD: the outlier filter drops it
    top_half = [True, False, True, False, True, False, True, False]
    assert select_heads(image, text, outlier_filter=False)[0].tolist() == top_half
    # with head 0 zeroed the VHDs are {0, 1, 4, .5, 3, .2, 2, .1}: median .5 -> heads 1, 2, 4, 6
    assert select_heads(image, text)[0].tolist() == [False, True, True, False, True, False, True, False]
    # a large VHD alone (small TA) is not an outlier
    text[0, 0] = 0.0
    assert select_heads(image, text)[0, 0]
    # rows are independent
    both = select_heads(torch.cat([image, -image]), torch.cat([text, text]))
    assert torch.equal(both[0], both[1])


def test_default_layers_follow_the_paper_scaled_by_depth():
    assert default_layers("llava", 32) == (1, *range(18, 32))
    assert default_layers("llava_next", 32) == (1, *range(18, 32))
    assert default_layers("instructblip", 32) == tuple(range(14, 32))
    assert default_layers("qwen2_vl", 28) == (1, *range(16, 28))
    assert default_layers("llava", 2) == (1,) and default_layers("instructblip", 2) == (1,)
    assert VHR(layers=[3, 1, 3]).layers == (1, 3)
    with pytest.raises(HallucError, match="layer indices"):
        VHR(layers=(-1,))
    with pytest.raises(HallucError, match="the model has 2 layers"):
        VHR(layers=(5,)).chosen_layers("llava", 2)


def test_alpha_one_is_bit_identical_even_through_the_machinery(tiny_llava, images, monkeypatch):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "vhr", alpha=1.0), vanilla)
    monkeypatch.setattr(VHR, "is_identity", lambda self: False)  # run the passes, select, scale by 1
    assert torch.equal(first_logits(tiny_llava, images, "vhr", alpha=1.0, layers=[0, 1]), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "vhr"), vanilla)


def test_one_text_only_pass_at_the_first_step_only(tiny_llava, images):
    layer0 = tiny_llava.adapter.resolve(tiny_llava.model, "layers.0")
    calls = []
    handle = layer0.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape[:2])))
    try:
        halluc.generate(tiny_llava, images, PROMPTS, max_new_tokens=4)
        vanilla, calls[:] = list(calls), []
        halluc.generate(tiny_llava, images, PROMPTS, "vhr", max_new_tokens=4)
    finally:
        handle.remove()
    text = tiny_llava.adapter.build_inputs(tiny_llava.processor, None, PROMPTS)["input_ids"].shape
    assert calls == [vanilla[0], tuple(text), *vanilla[1:]]  # prefill, its text-only pass, then decode steps


def test_later_layers_select_on_reinforced_outputs(tiny_llava, images):
    """Layer 1's heads are chosen from its head outputs *after* layer 0 was reinforced."""
    model, adapter = tiny_llava.model, tiny_llava.adapter
    inputs = adapter.build_inputs(tiny_llava.processor, halluc.api.load_images(images), PROMPTS)
    session = make_session(tiny_llava, inputs, prompts=PROMPTS)
    method = VHR(alpha=3.0, layers=(0, 1), outlier_filter=False)
    with attach(session, [method]), torch.no_grad():
        model(**inputs)
    state = session.state["vhr"]
    heads = adapter.num_heads(model)
    seen = {}

    def scale_layer0(module, args):
        x = args[0]
        return ((x.view(*x.shape[:-1], heads, -1) * state.scale[0][:, None, :, None]).view_as(x),)

    def record_layer1(module, args):
        seen["x"] = args[0][:, -1].view(len(PROMPTS), heads, -1)

    layer1 = adapter.resolve(model, "layers.1.attn.o_proj").register_forward_pre_hook(record_layer1)
    layer0 = adapter.resolve(model, "layers.0.attn.o_proj").register_forward_pre_hook(scale_layer0)
    try:
        with torch.no_grad():
            model(**inputs)  # layer 0 reinforced with VHR's own choice
            reinforced = seen["x"]
            layer0.remove()
            model(**inputs)  # plain model
            plain = seen["x"]
    finally:
        layer0.remove(), layer1.remove()
    torch.testing.assert_close(state.vhd[1], (reinforced - state.text[1]).norm(dim=-1))
    assert not torch.allclose(state.vhd[1], (plain - state.text[1]).norm(dim=-1))
    expected = select_heads(reinforced, state.text[1])
    assert torch.equal(state.scale[1] == 3.0, expected)
    assert expected.sum(-1).tolist() == [heads // 2] * len(PROMPTS)  # distinct VHDs: half the heads





def test_stacks_with_the_other_in_model_methods(tiny_llava, images):
    """Auxiliary passes see the plain model: VHR's and VISTA's extra passes, CCA's ids, DAMRO's rows."""
    stack = ["vhr", "vista", "cca", "damro"]  # DAMRO's official variant rewrites positions as CCA does: mask
    before = settled_hook_count(tiny_llava, images)
    batch = halluc.generate(tiny_llava, images, PROMPTS, stack, variant="mask", max_new_tokens=3)
    assert batch == [halluc.generate(tiny_llava, [images[i]], [PROMPTS[i]], stack, variant="mask",
                                     max_new_tokens=3)[0] for i in range(2)]
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}
