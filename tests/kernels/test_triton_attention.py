"""Triton kernel == torch reference, over shapes chosen to hit every branch of the kernel and a
per-dtype tolerance table. On CPU the kernel runs under Triton's interpreter (each call 0.1-0.5 s),
so the shapes are small; the interpreter blocks are 32 wide, so Tk > 32 means several key blocks."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from halluc.kernels import (
    AttentionEdit,
    Redistribution,
    ScoreBoost,
    attention,
    attention_reference,
    resolve_impl,
    use_impl,
)
from halluc.kernels.masks import causal_mask

triton = pytest.importorskip("triton")
from halluc.kernels.triton_attention import triton_attention  # noqa: E402

# dtype -> (atol, rtol) for the output; column mass and attention rows are fp32 math in both paths.
TOL = {torch.float32: (2e-5, 1e-5), torch.float16: (3e-3, 2e-3), torch.bfloat16: (3e-2, 2e-2)}
MASS_TOL = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}

# name: (B, H, Hkv, Tq, Tk, D, mask) -- mask: None | "pad" (left padding, causal) | "noncausal"
SHAPES = {
    "decode": (2, 4, 2, 1, 77, 32, None),  # Tq = 1, 3 key blocks, GQA 2
    "prefill": (1, 2, 2, 45, 45, 16, None),  # 2 query blocks, causal skipping of key blocks
    "chunk": (2, 4, 1, 20, 70, 16, None),  # Tq < Tk (cache), GQA 4
    "pad-prefill": (2, 2, 1, 40, 40, 24, "pad"),  # padding, fully masked pad rows, D not a power of 2
    "pad-decode": (2, 4, 4, 1, 50, 16, "pad"),
    "noncausal": (1, 2, 2, 20, 20, 16, "noncausal"),  # vision-style
}


def make_inputs(shape, dtype, seed=0):
    b, h, hkv, tq, tk, d, mask = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, tq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, tk, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, tk, d, generator=g).to(dtype)
    am = None
    if mask == "pad":
        keep = torch.ones(b, tk, dtype=torch.bool)
        keep[-1, :7] = False  # the last row is left-padded by 7
        am = (causal_mask(tq, tk, "cpu")[None] & keep[:, None, :])[:, None]
    return q, k, v, am, mask != "noncausal"


def make_edit(kind: str, shape, seed=0) -> AttentionEdit:
    """Edits over the prompt columns (Tc = Tk - 3 when keys were generated after the prompt)."""
    b, h, _, tq, tk, _, _ = shape
    tc = tk - 3 if tq < tk else tk
    g = torch.Generator().manual_seed(seed + 1)
    img = torch.zeros(b, tc, dtype=torch.bool)
    img[:, 8:8 + tc // 2] = True  # image block in the middle of the prompt
    sinks = torch.zeros(b, tc, dtype=torch.bool)
    sinks[:, 7] = True  # BOS-like text sink (after the padding)
    sinks[:, 10] = sinks[:, 13] = True  # two visual sinks
    bias = torch.randn(b, tc, generator=g) * 0.5
    bias[:, 12] = float("-inf")  # one removed image token
    bias = bias + 3.0 * sinks  # make the sinks draw attention
    e = {}
    if kind in ("bias", "all"):
        e["column_bias"] = bias
    if kind in ("head", "all"):
        e["head_bias"] = torch.randn(h, generator=g)
    if kind in ("boost", "all"):
        e["boost"] = ScoreBoost(0.5)
    if kind == "boost-rows":
        e["boost"] = ScoreBoost(0.5, last_row_only=False)
    if kind == "boost-per-column":  # PAINT-style per-column strengths
        e["boost"] = ScoreBoost(img * 0.7 + sinks * 0.3)
    if kind in ("redist", "all"):
        e["redistribute"] = Redistribution(sinks, keep=0.6, max_source_share=0.5, min_mass=0.2)
        e.setdefault("column_bias", bias)
    if kind in ("null", "null-all"):  # a null key per prompt row, some rows without one
        null = torch.randn(b, h, tc, generator=g) * 2.0
        null[:, :, ::5] = float("-inf")
        e["null_logit"] = null
    if kind == "null-all":
        e.update(column_bias=bias, head_bias=torch.randn(h, generator=g), boost=ScoreBoost(0.5),
                 redistribute=Redistribution(sinks, keep=0.6, max_source_share=0.5, min_mass=0.2))
    if kind in ("mass", "all", "redist", "null-all"):
        e["return_column_mass"] = True
    if kind in ("row", "all", "redist", "null-all"):
        e["return_attention_row"] = True
    return AttentionEdit(columns=img, **e)


def check(shape, kind, dtype, config=None):
    q, k, v, am, causal = make_inputs(shape, dtype)
    edit = make_edit(kind, shape)
    scale = shape[5] ** -0.5
    ref = attention_reference(q, k, v, am, scaling=scale, edit=edit, is_causal=causal)
    got = triton_attention(q, k, v, am, scaling=scale, edit=edit, is_causal=causal, config=config)
    atol, rtol = TOL[dtype]
    assert got.impl == "triton" and got.out.dtype == dtype and got.out.shape == ref.out.shape
    torch.testing.assert_close(got.out.float(), ref.out.float(), atol=atol, rtol=rtol)
    for name in ("column_mass", "attention_row"):
        a, r = getattr(got, name), getattr(ref, name)
        assert (a is None) == (r is None), name
        if r is not None:
            torch.testing.assert_close(a, r, atol=MASS_TOL[dtype], rtol=1e-4)
    return got, ref


CASES = [
    ("decode", "none"), ("decode", "all"), ("decode", "redist"), ("decode", "boost"), ("decode", "row"),
    ("prefill", "none"), ("prefill", "all"), ("prefill", "boost-rows"), ("prefill", "head"),
    ("chunk", "bias"), ("chunk", "redist"), ("chunk", "boost-per-column"), ("chunk", "mass"),
    ("pad-prefill", "all"), ("pad-prefill", "none"), ("pad-decode", "all"), ("noncausal", "all"),
    ("prefill", "null"), ("chunk", "null"), ("pad-prefill", "null-all"), ("chunk", "null-all"),
    ("decode", "null"), ("pad-decode", "null-all"), ("noncausal", "null-all"),  # decode queries the null key reaches
]


@pytest.mark.parametrize("shape,kind", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_kernel_matches_reference_fp32(shape, kind):
    check(SHAPES[shape], kind, torch.float32)


HALF_CASES = [("decode", "all"), ("prefill", "all"), ("chunk", "redist"), ("pad-prefill", "all"),
              ("prefill", "null-all"), ("decode", "null")]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape,kind", HALF_CASES, ids=[f"{s}-{k}" for s, k in HALF_CASES])
def test_kernel_matches_reference_half(shape, kind, dtype):
    check(SHAPES[shape], kind, dtype)


def test_redistribution_selects_some_rows_and_not_others():
    """The redistribution cases above are only meaningful if they exercise both outcomes of the selection."""
    shape = SHAPES["chunk"]
    q, k, v, am, _ = make_inputs(shape, torch.float32)
    edit = make_edit("redist", shape)
    got = triton_attention(q, k, v, am, scaling=0.25, edit=edit).out
    off = make_edit("redist", shape)
    off.redistribute = dataclasses.replace(off.redistribute, keep=1.0)
    plain = attention_reference(q, k, v, am, scaling=0.25, edit=off).out
    changed = (got - plain).abs().amax(-1) > 1e-4  # (B, Tq, H)
    assert changed.any() and not changed.all()


def test_fully_masked_rows_are_zero():
    shape = SHAPES["decode"]
    q, k, v, _, _ = make_inputs(shape, torch.float32)
    bias = torch.zeros(2, 77)
    bias[1] = float("-inf")  # batch row 1 sees no key at all
    res = triton_attention(q, k, v, None, scaling=0.2, edit=AttentionEdit(column_bias=bias, return_attention_row=True,
                                                                           return_column_mass=True))
    assert torch.equal(res.out[1], torch.zeros_like(res.out[1])) and torch.isfinite(res.out).all()
    assert torch.equal(res.attention_row[1], torch.zeros_like(res.attention_row[1]))
    assert torch.equal(res.column_mass, torch.zeros_like(res.column_mass))  # no column set


def test_block_sizes_do_not_change_the_result():
    shape = SHAPES["chunk"]
    a, _ = check(shape, "all", torch.float32, config={"BLOCK_M": 16, "BLOCK_N": 16})
    b, _ = check(shape, "all", torch.float32, config={"BLOCK_M": 64, "BLOCK_N": 64})
    torch.testing.assert_close(a.out, b.out, atol=1e-6, rtol=1e-6)


# ---- dispatcher -------------------------------------------------------------------------------
def test_dispatch_env_and_override(monkeypatch):
    monkeypatch.delenv("HALLUC_KERNEL", raising=False)
    assert resolve_impl("cpu") == "torch" and resolve_impl("cuda") == "triton"
    monkeypatch.setenv("HALLUC_KERNEL", "triton")
    assert resolve_impl("cpu") == "triton"
    with use_impl("torch"):
        assert resolve_impl("cpu") == "torch"
        assert resolve_impl("cpu", impl="triton") == "triton"
    monkeypatch.setenv("HALLUC_KERNEL", "cuda-please")
    with pytest.raises(ValueError, match="HALLUC_KERNEL"):
        resolve_impl("cpu")


def test_dispatch_falls_back_to_reference_for_masks_the_kernel_cannot_express():
    shape = SHAPES["prefill"]
    q, k, v, _, _ = make_inputs(shape, torch.float32)
    window = causal_mask(45, 45, "cpu") & ~causal_mask(45, 45, "cpu").tril(-8)  # sliding window of 8
    edit = make_edit("bias", shape)
    res = attention(q, k, v, window[None, None], scaling=0.25, edit=edit, impl="triton")
    assert res.impl == "torch"
    torch.testing.assert_close(res.out, attention_reference(q, k, v, window[None, None], scaling=0.25, edit=edit).out)
    padded = make_inputs(SHAPES["pad-prefill"], torch.float32)
    assert attention(*padded[:4], scaling=0.25, impl="triton").impl == "triton"


def test_mask_broadcast_over_the_batch():
    shape = SHAPES["chunk"]
    q, k, v, _, _ = make_inputs(shape, torch.float32)
    keep = torch.ones(1, 70, dtype=torch.bool)
    keep[0, :5] = False
    mask = (causal_mask(20, 70, "cpu")[None] & keep[:, None, :])[:, None]  # (1, 1, Tq, Tk) for B = 2
    edit = make_edit("all", shape)
    got = triton_attention(q, k, v, mask, scaling=0.25, edit=edit)
    ref = attention_reference(q, k, v, mask, scaling=0.25, edit=edit)
    torch.testing.assert_close(got.out, ref.out, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.column_mass, ref.column_mass, atol=1e-5, rtol=1e-4)


def test_package_imports_and_runs_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, halluc.kernels as hk\n"
        "assert not hk.triton_available() and hk.resolve_impl('cuda') == 'torch'\n"
        "q = torch.randn(1, 2, 3, 4)\n"
        "assert hk.attention(q, q, q, scaling=0.5).impl == 'torch'\n"
        "try:\n    hk.attention(q, q, q, scaling=0.5, impl='triton')\nexcept ImportError:\n    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_edits_with_mods_run_on_the_reference_whatever_is_forced(monkeypatch):
    shape = SHAPES["pad-prefill"]
    q, k, v, am, _ = make_inputs(shape, torch.float32)
    edit = make_edit("all", shape)
    edit.score_mod = lambda s, w: s + torch.where(w.columns & (w.head == 1), 0.4, 0.0)
    ref = attention_reference(q, k, v, am, scaling=0.25, edit=edit)
    monkeypatch.setenv("HALLUC_KERNEL", "triton")
    results = [attention(q, k, v, am, scaling=0.25, edit=edit), attention(q, k, v, am, scaling=0.25, edit=edit,
                                                                          impl="triton")]
    with use_impl("triton"):
        results.append(attention(q, k, v, am, scaling=0.25, edit=edit))
    for res in results:
        assert res.impl == "torch" and torch.equal(res.out, ref.out)
    with pytest.raises(ValueError, match="score_mod or prob_mod"):
        triton_attention(q, k, v, am, scaling=0.25, edit=edit)
    edit.score_mod = None  # the primitives alone go back to the kernel
    assert attention(q, k, v, am, scaling=0.25, edit=edit).impl == "triton"
