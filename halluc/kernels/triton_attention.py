"""Fused attention-with-edits forward kernel (FlashAttention-2 style online softmax), in Triton.

One pass over the keys per (query block, batch row, head) program computes, without ever forming
the Tq x Tk matrix:
  * causal masking (query i at key position Tk - Tq + i) and per-column padding,
  * grouped-query attention (query head h reads key/value head h // groups),
  * the score boost s += strength_j |s|, the per-head bias on the column set and the per-column bias,
  * a null key per query row (value 0, logit n_i): the online softmax starts from it (running max n_i,
    normaliser 1) instead of from nothing, so its share lands in the normaliser and nowhere else,
  * the redistribution: probabilities are accumulated into three partial outputs (source columns,
    the column set's other columns = targets, the rest) and four partial normalisers (sources in
    the column set, other sources, targets, the rest). Softmax normalisation is shared, so the
    selected rows' output is the re-weighted sum  (keep * acc_src + c * acc_tgt + acc_rest) / l  with
    c = 1 + (1 - keep) m_src / m_tgt. A block only multiplies P @ V into the partials whose columns it
    contains (a block inside the column set: one),
  * optional outputs: per-head mass on the column set (B, H, Tq), and for decode calls (Tq == 1) the
    final attention row (B, H, Tk), written as raw scores during the pass and normalised in a second
    sweep over that one row.
The semantics are those of `halluc.kernels.reference.attention_reference` (the spec; see
`halluc.kernels.edits` for the order of the edits). The plain-function edits (`score_mod`,
`prob_mod`) are not the kernel's: the dispatcher sends them to the reference.

On CPU tensors the kernel runs under Triton's interpreter (whatever TRITON_INTERPRET says); the
interpreter computes bf16 `tl.dot` wrongly (triton#11584), so operands are upcast to fp32 there.
The kernel uses `tl.reduce` with the standard combine functions instead of `tl.sum`/`tl.max` so that
it also interprets when triton was imported without TRITON_INTERPRET=1.

No GPU was available when this was written: block sizes are untuned defaults; set
HALLUC_TRITON_AUTOTUNE=1 to autotune over `AUTOTUNE_CONFIGS` instead.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from halluc.kernels.edits import AttentionEdit, AttentionResult
from halluc.kernels.masks import MaskChecks, MaskNotSupported, padding_columns

AUTOTUNE_ENV = "HALLUC_TRITON_AUTOTUNE"


def _attn_fwd(
    Q, K, V, Out, PAD, COLS, CB, BOOST, HB, SRC, QSTART, NULL, MASS, ROW,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_om, stride_oh, stride_od,
    stride_pad, stride_col,
    H, TQ, TK, TC, TN, GROUPS, sm_scale, src_keep, max_source_share, min_mass,
    TQ_KEY, TK_KEY,  # bucketed sizes: autotune keys only
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_PAD: tl.constexpr, HAS_COLS: tl.constexpr, HAS_CB: tl.constexpr,
    HAS_BOOST: tl.constexpr, BOOST_LAST_ROW: tl.constexpr, HAS_HB: tl.constexpr, HAS_REDIST: tl.constexpr,
    HAS_NULL: tl.constexpr,
    WANT_MASS: tl.constexpr, WANT_ROW: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // GROUPS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n0 = tl.arange(0, BLOCK_N)
    d_ok = offs_d < HEAD_DIM
    m_ok = offs_m < TQ
    q_pos = TK - TQ + offs_m  # key position of each query row
    is_last = offs_m == TQ - 1

    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh
    col_base = b * stride_col
    row_base = (b * H + h) * TK
    if HAS_HB:
        hb = tl.load(HB + b * H + h)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_r = tl.full([BLOCK_M], 0.0, tl.float32)  # the rest (without redistribution: all) columns
    l_t = tl.full([BLOCK_M], 0.0, tl.float32)  # the column set (without redistribution) / targets
    l_cs = tl.full([BLOCK_M], 0.0, tl.float32)  # sources in the column set
    l_os = tl.full([BLOCK_M], 0.0, tl.float32)  # other sources
    acc_r = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    acc_t = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    acc_s = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    if HAS_NULL:  # the null key first: running max n_i, normaliser exp(n_i - n_i) = 1, nothing accumulated
        m_i = tl.load(NULL + (b * H + h) * TN + q_pos, mask=m_ok & (q_pos < TN), other=float("-inf"))
        l_r = tl.where(m_i == float("-inf"), 0.0, 1.0)

    hi = TK
    if IS_CAUSAL:
        hi = tl.minimum(TK, TK - TQ + (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        n_ok = offs_n < TK
        c_ok = offs_n < TC
        kt = tl.load(k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # (BLOCK_D, BLOCK_N)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_D)
        if UPCAST:
            kt = kt.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, kt, input_precision=DOT_PRECISION) * sm_scale  # (BLOCK_M, BLOCK_N) fp32

        if HAS_COLS:
            col = tl.load(COLS + col_base + offs_n, mask=c_ok, other=0) != 0
        if HAS_BOOST:  # on the raw scores
            strength = tl.load(BOOST + col_base + offs_n, mask=c_ok, other=0.0)
            boost = strength[None, :] * tl.abs(s)
            if BOOST_LAST_ROW:
                boost = tl.where(is_last[:, None], boost, 0.0)
            s = s + boost
        if HAS_HB:
            s = s + tl.where(col[None, :], hb, 0.0)
        if HAS_CB:
            s = s + tl.load(CB + col_base + offs_n, mask=c_ok, other=0.0)[None, :]
        valid = n_ok[None, :] & m_ok[:, None]
        if IS_CAUSAL:
            valid = valid & (offs_n[None, :] <= q_pos[:, None])
        if HAS_PAD:
            keep = tl.load(PAD + b * stride_pad + offs_n, mask=n_ok, other=0) != 0
            valid = valid & keep[None, :]
        s = tl.where(valid, s, float("-inf"))
        if WANT_ROW:  # raw scores of row 0; normalised after the loop
            tl.store(ROW + row_base + offs_n[None, :] + offs_m[:, None] * 0, s,
                     mask=(offs_m[:, None] == 0) & n_ok[None, :])

        m_new = tl.maximum(m_i, tl.reduce(s, 1, tl.standard._elementwise_max))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # fully masked so far: keep exp finite
        alpha = tl.exp(m_i - m_use)
        p = tl.exp(s - m_use[:, None])
        m_i = m_new
        acc_r = acc_r * alpha[:, None]
        if HAS_REDIST:
            src = tl.load(SRC + col_base + offs_n, mask=c_ok, other=0) != 0
            is_src = src[None, :]
            is_tgt = col[None, :] & (src[None, :] == 0)
            is_rest = (col[None, :] == 0) & (src[None, :] == 0)
            p_s = tl.where(is_src, p, 0.0)
            p_t = tl.where(is_tgt, p, 0.0)
            p_r = tl.where(is_rest, p, 0.0)
            l_cs = l_cs * alpha + tl.reduce(tl.where(col[None, :], p_s, 0.0), 1, tl.standard._sum_combine)
            l_os = l_os * alpha + tl.reduce(tl.where(col[None, :], 0.0, p_s), 1, tl.standard._sum_combine)
            l_t = l_t * alpha + tl.reduce(p_t, 1, tl.standard._sum_combine)
            l_r = l_r * alpha + tl.reduce(p_r, 1, tl.standard._sum_combine)
            acc_t = acc_t * alpha[:, None]
            acc_s = acc_s * alpha[:, None]
            # each class's P @ V only where the block has columns of that class
            if tl.reduce((src & n_ok).to(tl.int32), 0, tl.standard._sum_combine) > 0:
                acc_s += tl.dot(p_s.to(v.dtype), v, input_precision=DOT_PRECISION)
            if tl.reduce(((col & (src == 0)) & n_ok).to(tl.int32), 0, tl.standard._sum_combine) > 0:
                acc_t += tl.dot(p_t.to(v.dtype), v, input_precision=DOT_PRECISION)
            if tl.reduce((((col == 0) & (src == 0)) & n_ok).to(tl.int32), 0, tl.standard._sum_combine) > 0:
                acc_r += tl.dot(p_r.to(v.dtype), v, input_precision=DOT_PRECISION)
        else:
            l_r = l_r * alpha + tl.reduce(p, 1, tl.standard._sum_combine)
            if WANT_MASS:
                l_t = l_t * alpha + tl.reduce(tl.where(col[None, :], p, 0.0), 1, tl.standard._sum_combine)
            acc_r += tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)  # v is fp32 under UPCAST

    if HAS_REDIST:
        l_all = l_cs + l_os + l_t + l_r
        l_col = l_cs + l_t
        q_start = tl.load(QSTART + b)
        sel = (l_t > 0) & (l_cs <= max_source_share * l_col) & (l_col >= min_mass * l_all) & (q_pos >= q_start)
        c_s = tl.where(sel, src_keep, 1.0)
        c_t = tl.where(sel, 1.0 + (1.0 - src_keep) * (l_cs + l_os) / tl.where(l_t > 0, l_t, 1.0), 1.0)
        acc = acc_s * c_s[:, None] + acc_t * c_t[:, None] + acc_r
        mass = l_cs * c_s + l_t * c_t
    else:
        l_all = l_r
        acc = acc_r
        mass = l_t
    l_safe = tl.where(l_all > 0, l_all, 1.0)  # fully masked rows: acc == 0, output 0
    out = acc / l_safe[:, None]
    tl.store(Out + b * stride_ob + offs_m[:, None] * stride_om + h * stride_oh + offs_d[None, :] * stride_od,
             out.to(Out.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    if WANT_MASS:
        tl.store(MASS + (b * H + h) * TQ + offs_m, mass / l_safe, mask=m_ok)

    if WANT_ROW:  # Tq == 1: normalise the stored scores of row 0
        tl.debug_barrier()
        first = offs_m == 0
        m0 = tl.reduce(tl.where(first, tl.where(m_i == float("-inf"), 0.0, m_i), 0.0), 0, tl.standard._sum_combine)
        l0 = tl.reduce(tl.where(first, l_safe, 0.0), 0, tl.standard._sum_combine)
        if HAS_REDIST:
            cs0 = tl.reduce(tl.where(first, c_s, 0.0), 0, tl.standard._sum_combine)
            ct0 = tl.reduce(tl.where(first, c_t, 0.0), 0, tl.standard._sum_combine)
        for start_n in range(0, TK, BLOCK_N):
            offs_n = start_n + offs_n0
            n_ok = offs_n < TK
            a = tl.exp(tl.load(ROW + row_base + offs_n, mask=n_ok, other=float("-inf")) - m0) / l0
            if HAS_REDIST:
                c_ok = offs_n < TC
                col1 = tl.load(COLS + col_base + offs_n, mask=c_ok, other=0) != 0
                src1 = tl.load(SRC + col_base + offs_n, mask=c_ok, other=0) != 0
                a = a * tl.where(src1, cs0, tl.where(col1, ct0, 1.0))
            tl.store(ROW + row_base + offs_n, a, mask=n_ok)


_JIT = JITFunction(_attn_fwd)
_INTERPRETED = InterpretedFunction(_attn_fwd)

# Untuned search space for HALLUC_TRITON_AUTOTUNE=1 (pruned per call: decode uses BLOCK_M 16).
AUTOTUNE_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm in (16, 64, 128) for bn in (32, 64, 128) for w in (4, 8) for s in (2, 3)
]


def _prune(configs, named_args, **kwargs):
    decode = named_args["TQ"] == 1
    kept = [c for c in configs if (c.kwargs["BLOCK_M"] == 16) == decode]
    return kept or configs


_AUTOTUNED = None


def _autotuned():
    global _AUTOTUNED
    if _AUTOTUNED is None:
        _AUTOTUNED = triton.autotune(
            configs=AUTOTUNE_CONFIGS,
            key=["TQ_KEY", "TK_KEY", "HEAD_DIM", "HAS_REDIST", "WANT_ROW", "WANT_MASS", "HAS_BOOST", "IS_CAUSAL",
                 "HAS_NULL"],
            prune_configs_by={"early_config_prune": _prune},
        )(_JIT)
    return _AUTOTUNED


def default_config(tq: int, head_dim: int, has_redist: bool, interpret: bool, itemsize: int = 2) -> dict:
    """Block sizes and launch parameters.

    GPU values are NOT timed (no GPU was available): they are the configurations with no (or the
    fewest) register spills when compiled for sm_90 at head_dim 128 with every edit on (ptxas -v):
        prefill            BLOCK_M 64, BLOCK_N 64, 8 warps, 3 stages   0 B spilled (64x64x4 warps: 172 B)
        prefill + redist   BLOCK_M 64, BLOCK_N 32, 8 warps, 2 stages   28 B (three fp32 partial outputs)
        decode             BLOCK_M 16, BLOCK_N 128, 8 warps, 2 stages  0 B
        decode + redist    BLOCK_M 16, BLOCK_N 32, 4 warps, 2 stages   0 B
    fp32 inputs (itemsize 4) take BLOCK_N 32 and 2 stages for prefill: 64x64 with 3 stages needs
    177 KiB of shared memory at head_dim 128, more than an A100 has.
    Under the interpreter every program and block costs Python overhead, so blocks are just small
    enough for tests to reach several key blocks.
    """
    if interpret:
        return {"BLOCK_M": 16 if tq == 1 else 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}
    if itemsize > 2 and tq > 1:
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 8 if head_dim > 64 else 4, "num_stages": 2}
    if tq == 1:
        if has_redist:
            return {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
        return {"BLOCK_M": 16, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2}
    if has_redist:
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 8, "num_stages": 2}
    return {"BLOCK_M": 128 if head_dim <= 64 else 64, "BLOCK_N": 64, "num_warps": 8 if head_dim > 64 else 4,
            "num_stages": 3}


def interpreting(device: torch.device) -> bool:
    """Whether a launch on `device` goes through Triton's interpreter."""
    return device.type != "cuda" or isinstance(tl.standard._sum_combine, InterpretedFunction)


def _bucket(n: int) -> int:
    return 1 if n == 1 else 1 << max(n - 1, 1).bit_length()


def _redistribution_scalars(edit: AttentionEdit) -> tuple[float, float, float]:
    """(keep, max_source_share, min_mass) of the edit's redistribution (unused by the kernel without one)."""
    spec = edit.redistribute
    if spec is None:
        return 1.0, 1.0, 0.0
    return float(spec.keep), float(spec.max_source_share), float(spec.min_mass)


def triton_attention(query, key, value, attention_mask=None, *, scaling: float, edit: AttentionEdit | None = None,
                     is_causal: bool = True, config: dict | None = None,
                     mask_checks: MaskChecks | None = None) -> AttentionResult:
    """Same contract as `attention_reference` (plus `config`: block sizes / launch options, and
    `mask_checks`: the caller's cache of mask-pattern verdicts, see `halluc.kernels.masks`).

    Raises `halluc.kernels.masks.MaskNotSupported` for masks other than causal & padding columns.
    """
    b, h, tq, d = query.shape
    hkv, tk = key.shape[1], key.shape[2]
    if h % hkv or key.shape[0] != b or value.shape[:3] != key.shape[:3] or value.shape[-1] != d or key.shape[-1] != d:
        raise ValueError(f"bad shapes q {tuple(query.shape)} k {tuple(key.shape)} v {tuple(value.shape)}")
    edit = edit if edit is not None else AttentionEdit()
    if edit.has_mods:
        raise ValueError("the Triton kernel runs the edit primitives only; an edit with score_mod or prob_mod "
                         "runs on the reference (halluc.kernels.attention sends it there)")
    pad = padding_columns(attention_mask, tq, tk, is_causal, mask_checks)
    if pad is not None and pad.shape[0] not in (1, b):
        raise MaskNotSupported(f"mask batch {pad.shape[0]} does not match the batch {b}")
    dev = query.device
    cols = edit.column_tensors(b, h, dev)
    if cols.length > tk:
        raise ValueError(f"column tensor covers {cols.length} keys but attention sees only {tk}")
    want_mass = edit.return_column_mass
    want_row = edit.return_attention_row and tq == 1
    columns = cols.columns
    if columns is None and want_mass:  # no column set: mass is 0
        columns = torch.zeros(b, max(cols.length, 1), dtype=torch.bool, device=dev)
    tc = cols.length if columns is None else columns.shape[-1]
    interp = interpreting(dev)

    dummy = torch.empty(1, dtype=torch.int8, device=dev)  # never read (its flag is off); no fill kernel
    out = torch.empty(b, tq, h, d, dtype=query.dtype, device=dev)
    mass = torch.empty(b, h, tq, dtype=torch.float32, device=dev) if want_mass else None
    row = torch.empty(b, h, tk, dtype=torch.float32, device=dev) if want_row else None

    def i8(t):
        return t.view(torch.int8) if t is not None else dummy

    def f32(t):
        return t if t is not None else dummy

    # the padding vector is a strided view of the 4-D mask: pass its row stride instead of copying
    pad_arg = pad if pad is None or pad.stride(-1) == 1 else pad.contiguous()

    args = (query, key, value, out, i8(pad_arg), i8(columns), f32(cols.bias), f32(cols.boost), f32(cols.head_bias),
            i8(cols.sources), f32(cols.query_start), f32(cols.null_logit), f32(mass), f32(row),
            *query.stride(), *key.stride(), *value.stride(), *out.stride(),
            pad_arg.stride(0) if pad_arg is not None and pad_arg.shape[0] == b else 0, tc,  # 0: mask broadcast over B
            h, tq, tk, tc, cols.null_logit.shape[-1] if cols.null_logit is not None else 0, h // hkv, float(scaling),
            *_redistribution_scalars(edit), _bucket(tq), _bucket(tk))
    boost_last_row = edit.boost is not None and cols.boost is not None and bool(edit.boost.last_row_only)
    flags = dict(
        HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)),
        IS_CAUSAL=bool(is_causal), HAS_PAD=pad is not None, HAS_COLS=columns is not None,
        HAS_CB=cols.bias is not None, HAS_BOOST=cols.boost is not None,
        BOOST_LAST_ROW=boost_last_row, HAS_HB=cols.head_bias is not None,
        HAS_REDIST=cols.sources is not None, HAS_NULL=cols.null_logit is not None, WANT_MASS=want_mass,
        WANT_ROW=want_row,
        UPCAST=interp and query.dtype != torch.float32,
        DOT_PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
    )
    autotune = not interp and config is None and os.environ.get(AUTOTUNE_ENV, "0") == "1"
    if autotune:
        tuned_grid = lambda meta: (triton.cdiv(tq, meta["BLOCK_M"]), b * h)  # noqa: E731
        _autotuned()[tuned_grid](*args, **flags)
    else:
        cfg = {**default_config(tq, d, cols.sources is not None, interp, query.element_size()), **(config or {})}
        grid = (triton.cdiv(tq, cfg["BLOCK_M"]), b * h)
        kernel = _INTERPRETED if interp else _JIT
        launch = {} if interp else {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
        kernel[grid](*args, **flags, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], **launch)
    return AttentionResult(out, mass, row, "triton")
