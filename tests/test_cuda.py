"""What only a GPU can check. Every test here skips without CUDA; the CPU suite covers the same code with
the kernel under Triton's interpreter. `speed/gpu_check.sh` runs this file on a lent GPU, together with the
method contract on `cuda` (`HALLUC_TEST_DEVICE=cuda`, tests/interventions/test_contract.py) and the
multi-GPU test of tests/test_device_map.py.

  * the compiled kernel against the torch reference (fp32 on the inputs upcast), over the CPU test's
    shapes plus LLaVA-1.5-7B and Qwen2-VL-7B attention shapes, every edit primitive, fp32, fp16 and bf16;
  * every method on every family's tiny model on `cuda`: the same tokens and per-step scores with the
    Triton kernel as with the torch reference inside the model;
  * each family's tiny model gives on `cuda` the first-step logits it gives on CPU (vanilla);
  * with an attention edit on `cuda`, the model's attention really runs the Triton kernel.
"""
from __future__ import annotations

import pytest
import torch

import halluc
from halluc.interventions import method_class
from halluc.kernels import attention_reference, use_impl
from halluc.modeling.generic import GENERIC
from tests.helpers import PROMPTS, tiny_aya_vision
from tests.interventions.test_contract import FAMILIES, SUPPORTED, example

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

# ---- the compiled kernel ----------------------------------------------------------------------
triton = pytest.importorskip("triton")
from halluc.kernels.triton_attention import triton_attention  # noqa: E402
from tests.kernels.test_triton_attention import MASS_TOL, SHAPES, TOL, make_edit, make_inputs  # noqa: E402

# (B, H, Hkv, Tq, Tk, D, mask), as in tests/kernels/test_triton_attention.py, at real models' sizes
GPU_SHAPES = {
    **SHAPES,
    "llava7b-prefill": (1, 32, 32, 640, 640, 128, None),  # BOS + 576 image tokens + text
    "llava7b-decode-4k": (2, 32, 32, 1, 4096, 128, None),
    "llava7b-pad-prefill": (2, 32, 32, 300, 300, 128, "pad"),
    "qwen2vl7b-chunk": (1, 28, 4, 130, 700, 128, None),  # GQA 7
    "d80-pad-decode": (2, 8, 2, 1, 333, 80, "pad"),  # head_dim not a power of 2
}
KINDS = ("none", "bias", "head", "boost", "boost-rows", "boost-per-column", "redist", "mass", "row", "all")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", GPU_SHAPES)
def test_compiled_kernel_matches_reference(shape, kind, dtype):
    q, k, v, mask, causal = make_inputs(GPU_SHAPES[shape], DTYPES[dtype])
    q, k, v = (t.cuda() for t in (q, k, v))
    mask = mask.cuda() if mask is not None else None
    edit = make_edit(kind, GPU_SHAPES[shape])  # CPU tensors: the kernel moves them (`column_tensors`)
    scale = q.shape[-1] ** -0.5
    ref = attention_reference(q.float(), k.float(), v.float(), mask, scaling=scale, edit=edit, is_causal=causal)
    got = triton_attention(q, k, v, mask, scaling=scale, edit=edit, is_causal=causal)
    assert got.impl == "triton" and got.out.dtype == DTYPES[dtype] and got.out.device.type == "cuda"
    atol, rtol = TOL[DTYPES[dtype]]
    torch.testing.assert_close(got.out.float(), ref.out, atol=atol, rtol=rtol)
    for name in ("column_mass", "attention_row"):
        a, r = getattr(got, name), getattr(ref, name)
        assert (a is None) == (r is None), name
        if r is not None:
            torch.testing.assert_close(a, r, atol=MASS_TOL[DTYPES[dtype]], rtol=1e-4)


# ---- methods in the model on cuda -------------------------------------------------------------
@pytest.fixture(scope="module")
def cuda_lvlms():
    """family -> its tiny LVLM on cuda ("generic": the wrapped tiny Aya Vision)."""
    cache = {}

    def get(family: str):
        if family not in cache:
            if family == GENERIC:
                model, processor = tiny_aya_vision()
                with pytest.warns(UserWarning, match="generic adapter"):
                    cache[family] = halluc.wrap(model.to("cuda"), processor, name="tiny-aya-vision")
            else:
                cache[family] = halluc.load(FAMILIES[family], device="cuda")
        return cache[family]

    return get


@pytest.mark.parametrize("method,family", SUPPORTED)
def test_method_gives_the_same_result_on_the_kernel_as_on_the_reference(cuda_lvlms, images, method, family):
    lvlm = cuda_lvlms(family)
    scores = not method_class(method).replaces_search  # a replacement search (OPERA) gives no per-step scores
    runs = {}
    for impl in ("torch", "triton"):
        with use_impl(impl):
            runs[impl] = halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=3, return_scores=scores,
                                         **example(method))
    if not scores:
        assert runs["triton"] == runs["torch"]
        return
    assert runs["triton"].tokens == runs["torch"].tokens
    torch.testing.assert_close(runs["triton"].scores, runs["torch"].scores, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_model_on_cuda_gives_the_cpu_logits(cuda_lvlms, images, family, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the patch convolutions: full fp32
    on_cuda = halluc.generate(cuda_lvlms(family), images, PROMPTS, max_new_tokens=1, return_scores=True)
    on_cpu = halluc.generate(halluc.load(FAMILIES[family], device="cpu"), images, PROMPTS, max_new_tokens=1,
                             return_scores=True)
    torch.testing.assert_close(on_cuda.scores.cpu(), on_cpu.scores.cpu(), atol=1e-3, rtol=1e-3)


def test_an_attention_edit_runs_the_triton_kernel_in_the_model(cuda_lvlms, images, monkeypatch):
    import halluc.kernels.backend as backend

    impls = []
    dispatch = backend.attention

    def spy(*args, **kwargs):
        result = dispatch(*args, **kwargs)
        impls.append(result.impl)
        return result

    monkeypatch.setattr(backend, "attention", spy)
    halluc.generate(cuda_lvlms("llava"), images, PROMPTS, "pai", max_new_tokens=2, layers=(0, 1))
    assert impls and set(impls) == {"triton"}
