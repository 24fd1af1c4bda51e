"""The two methods in docs/writing-a-method.md: shown verbatim, and correct on the tiny models."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

import halluc
from halluc.interventions.registry import unregister
from tests.helpers import PROMPTS, batch_and_singles

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = {"head_image_scale": "head-image-scale", "prior_contrast": "prior-contrast"}


@pytest.fixture(scope="module")
def examples():
    """Import both example files (each registers its method) and unregister them afterwards."""
    modules = {}
    for stem in EXAMPLES:
        spec = importlib.util.spec_from_file_location(f"docs_example_{stem}", DOCS / "examples" / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        modules[stem] = module
    yield modules
    for name in EXAMPLES.values():
        unregister(name)


def test_the_page_shows_each_example_verbatim():
    page = (DOCS / "writing-a-method.md").read_text()
    for stem in EXAMPLES:
        assert (DOCS / "examples" / f"{stem}.py").read_text().rstrip() in page, stem


def scores(lvlm, images, method="none", prompts=PROMPTS, steps=1, **params):
    return halluc.generate(lvlm, images, prompts, method, max_new_tokens=steps, return_scores=True, **params).scores


def test_head_image_scale_is_the_head_bias_of_log_c(examples, tiny_models, images):
    from dataclasses import dataclass

    from halluc.interventions import Method, register
    from halluc.kernels import AttentionEdit

    @register
    @dataclass(frozen=True)
    class ByPrimitive(Method):  # the same edit spelled with the per-head bias primitive
        name = "test-head-bias-log-c"

        def attention_edits(self, session):
            heads = session.adapter.num_heads(session.model)
            bias = torch.tensor([math.log(2.0) if h in (0, 3) else 0.0 for h in range(heads)])
            return {layer: AttentionEdit(head_bias=bias) for layer in range(session.adapter.num_layers(session.model))}

    try:
        for name in ("tiny-llava", "tiny-qwen2-vl"):
            lvlm = tiny_models(name)
            vanilla = scores(lvlm, images, steps=3)
            assert torch.equal(scores(lvlm, images, "head-image-scale", steps=3, scale=1.0), vanilla)
            edited = scores(lvlm, images, "head-image-scale", steps=3, scale=2.0, heads=[0, 3])
            torch.testing.assert_close(edited, scores(lvlm, images, "test-head-bias-log-c", steps=3))
            assert not torch.allclose(edited, vanilla)
            batch, singles = batch_and_singles(lvlm, images, "head-image-scale", max_new_tokens=4, scale=2.0)
            assert batch == singles
    finally:
        unregister(ByPrimitive.name)


def test_prior_contrast_is_the_formula_on_the_changed_prompt(examples, tiny_llava, images):
    alpha, beta = 1.0, 0.1
    got = scores(tiny_llava, images, "prior-contrast", alpha=alpha, beta=beta)[:, 0]
    suffix = examples["prior_contrast"].PRIOR_SUFFIX
    pil = halluc.api.load_images(images)
    with torch.no_grad():
        logp = [tiny_llava.model(**tiny_llava.adapter.build_inputs(tiny_llava.processor, pil, prompts))
                .logits[:, -1].float().log_softmax(-1) for prompts in (PROMPTS, [p + suffix for p in PROMPTS])]
    expected = (1 + alpha) * logp[0] - alpha * logp[1]
    expected = expected.masked_fill(logp[0] < logp[0].max(-1, keepdim=True).values + math.log(beta), -math.inf)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)
    assert torch.equal(scores(tiny_llava, images, "prior-contrast", alpha=0.0, beta=0.0), scores(tiny_llava, images))
    stacked = halluc.generate(tiny_llava, images, PROMPTS, ["prior-contrast", "vcd"], max_new_tokens=3)
    batch, singles = batch_and_singles(tiny_llava, images, ["prior-contrast", "vcd"], max_new_tokens=3)
    assert stacked == batch == singles
