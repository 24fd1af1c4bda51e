"""Converting a CCA-trained LLaVA-codebase checkpoint into a llava-hf directory halluc loads."""
import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.modeling.cca_checkpoint import convert, hf_name, load_into

PROMPTS = ["Describe the image.", "What is it?"]


def test_llava_codebase_checkpoint_converts_into_a_loadable_llava_hf_directory(tmp_path, images):
    """A LLaVA-codebase checkpoint (no <image> row in the vocabulary) -> llava-hf directory -> halluc.load."""
    from safetensors.torch import save_file

    base = halluc.load("tiny-llava", device="cpu", seed=0)
    base.model.save_pretrained(tmp_path / "base")
    base.processor.save_pretrained(tmp_path / "base")
    trained = halluc.load("tiny-llava", device="cpu", seed=1).model.state_dict()
    inverse = {"model.multi_modal_projector.linear_1.": "model.mm_projector.0.",
               "model.multi_modal_projector.linear_2.": "model.mm_projector.2.",
               "model.language_model.": "model.", "lm_head.": "lm_head."}
    codebase = {}
    for name, value in trained.items():
        for new, old in inverse.items():
            if name.startswith(new):
                rows = value[:-5] if name.endswith(("embed_tokens.weight", "lm_head.weight")) else value
                codebase[old + name[len(new):]] = rows.clone()
    codebase["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # old checkpoints carry it
    (tmp_path / "cca").mkdir()
    save_file(codebase, tmp_path / "cca" / "model.safetensors")
    convert(tmp_path / "cca", tmp_path / "base", tmp_path / "out", dtype=torch.float32)
    converted = halluc.load(str(tmp_path / "out"), device="cpu")
    state = converted.model.state_dict()
    for key, value in codebase.items():
        if hf_name(key) is not None:
            assert torch.equal(state[hf_name(key)][: value.shape[0]], value), key
    assert torch.equal(state["lm_head.weight"][-5:], base.model.state_dict()["lm_head.weight"][-5:])  # base rows kept
    clip = "model.vision_tower.embeddings.patch_embedding.weight"  # no CLIP in the checkpoint: the base's
    assert torch.equal(state[clip], base.model.state_dict()[clip]) and not torch.equal(state[clip], trained[clip])
    assert len(halluc.generate(converted, images, PROMPTS, "cca", max_new_tokens=2)) == 2
    with pytest.raises(HallucError, match="lacks"):
        load_into(converted.model, {k: v for k, v in codebase.items() if "layers.1." not in k})
