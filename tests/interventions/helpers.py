"""Helpers shared by the in-model methods' tests (VHR, VISTA, DAMRO): hook counts and small runs."""
import pytest

import halluc

PROMPTS = ["Describe the image.", "What is it?"]


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def settled_hook_count(lvlm, images) -> int:
    """Hooks after one vanilla call: transformers adds its output-capture hooks on first use."""
    halluc.generate(lvlm, images, PROMPTS, max_new_tokens=1)
    return hook_count(lvlm.model)


def first_logits(lvlm, images, method="none", **params):
    return halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=1, return_scores=True, **params).scores[:, 0]


def generate_failing(lvlm, images, method, monkeypatch) -> None:
    """Run `method` with the model's generate raising, and check the error comes through."""

    def explode(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(lvlm.model, "generate", explode)
    with pytest.raises(RuntimeError, match="generation failed"):
        halluc.generate(lvlm, images, PROMPTS, method)


def batch_and_singles(lvlm, images, method, **kwargs) -> tuple[list[str], list[str]]:
    """The two prompts' answers generated as one batch, and one at a time."""
    batch = halluc.generate(lvlm, images, PROMPTS, method, **kwargs)
    singles = [halluc.generate(lvlm, [images[i]], [PROMPTS[i]], method, **kwargs)[0] for i in range(2)]
    return batch, singles
