"""Benchmark of attention-with-edits on LLaVA-1.5-7B-shaped attention, plus an end-to-end generate.

Micro modes (one attention call; 32 heads, head_dim 128, image = 576 columns after BOS):
    prefill   B=1, Tq = Tk = 640
    decode    B=1, Tq = 1, Tk in 640, 1024, 2048, 4096 (the prompt's 640 columns carry the edits)
for each edit variant
    none   plain causal attention        bias  column bias + per-head bias on the image columns
    pai    score boost on the last row   var   redistribution from BOS + 8 image sinks (VAR)
    all    bias + pai + var + column mass (+ the attention row in decode)
and each provider that can express the variant:
    halluc-triton  this kernel (all)
    sdpa           torch SDPA; `bias` as a prebuilt float attn_mask (none, bias)
    flex           FlexAttention (torch.compile'd on CUDA) with an equivalent score_mod (none, bias, pai)
    eager          the torch reference: materialised scores and weights (all)
Every provider also gets a `max_abs_err` row against the fp32 reference.

End-to-end mode (`e2e`): a LLaVA-1.5-7B-shaped model with random bf16 weights (CLIP ViT-L/14-336,
Llama-2-7B LM), a 640-token prompt; providers `sdpa` (vanilla), `halluc-noedit`, `halluc-pai`
(alpha 0.2, layers 2..31) and `halluc-var` (layers 2..31): prefill ms and generate tokens/s.

Rows are appended to a long-format CSV (one row per measurement):
    kernel, provider, mode, edit, shape, dtype, metric, unit, p50, p20, p80, peak_mem_mb,
    device, torch, triton, transformers, git_commit, date

Usage:
    python speed/bench_attention.py                      # CUDA: everything
    python speed/bench_attention.py --modes decode --edits none,all --contexts 640,4096
    python speed/bench_attention.py --smoke --out /tmp/b.csv   # CPU: tiny shapes, seconds
HALLUC_TRITON_AUTOTUNE=1 autotunes the kernel's block sizes (first call per shape is slow).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from halluc.kernels import AttentionEdit, Redistribution, ScoreBoost, attention_reference  # noqa: E402
from halluc.kernels.masks import causal_mask  # noqa: E402
from speed.common import csv_rows  # noqa: E402
from speed.common import provenance as common_provenance  # noqa: E402

COLUMNS = ["kernel", "provider", "mode", "edit", "shape", "dtype", "metric", "unit", "p50", "p20", "p80",
           "peak_mem_mb", "device", "torch", "triton", "transformers", "git_commit", "date"]
EDITS = ("none", "bias", "pai", "var", "all")
PROVIDERS = ("halluc-triton", "sdpa", "flex", "eager")
SUPPORTS = {"halluc-triton": set(EDITS), "eager": set(EDITS), "sdpa": {"none", "bias"}, "flex": {"none", "bias", "pai"}}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class Shape:
    """LLaVA-1.5-7B attention: the prompt is BOS + image + text."""

    batch: int = 1
    heads: int = 32
    head_dim: int = 128
    prompt: int = 640
    image: int = 576
    sinks: int = 8  # visual sinks for VAR (plus BOS)


# ---- provenance and timing --------------------------------------------------------------------
def provenance(device: torch.device) -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    return common_provenance(device, triton=triton_version)


def measure(fn, device: torch.device, reps: int, warmup: int) -> tuple[float, float, float, float | None]:
    """(median, p20, p80) ms and the peak extra memory in MB (CUDA only)."""
    if device.type == "cuda":
        import triton.testing
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
        p50, p20, p80 = triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
        return p50, p20, p80, peak
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return (statistics.median(times), *quantiles(times), None)


def quantiles(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)

    def pick(f):
        return xs[min(len(xs) - 1, max(0, round(f * (len(xs) - 1))))]

    return pick(0.2), pick(0.8)


# ---- micro benchmark --------------------------------------------------------------------------
def make_case(shape: Shape, tq: int, tk: int, edit: str, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    b, h, d = shape.batch, shape.heads, shape.head_dim
    q, k, v = (torch.randn(b, h, n, d, generator=g).to(device, dtype) for n in (tq, tk, tk))
    img = torch.zeros(b, shape.prompt, dtype=torch.bool)
    img[:, 1:1 + shape.image] = True
    sinks = torch.zeros_like(img)
    sinks[:, 0] = True
    sinks[:, 1 + torch.randperm(shape.image, generator=g)[:shape.sinks]] = True
    fields = {}
    if edit in ("bias", "all"):
        fields.update(column_bias=torch.randn(b, shape.prompt, generator=g) * 0.1,
                      head_bias=torch.randn(h, generator=g) * 0.1)
    if edit in ("pai", "all"):
        fields["boost"] = ScoreBoost(0.2)
    if edit in ("var", "all"):
        fields["redistribute"] = Redistribution(sinks.to(device), keep=0.6, max_source_share=0.5, min_mass=0.2)
    if edit == "all":
        fields.update(return_column_mass=True, return_attention_row=tq == 1)
    return q, k, v, AttentionEdit(columns=img.to(device), **{k_: (t.to(device) if torch.is_tensor(t) else t)
                                                             for k_, t in fields.items()})


def provider_fn(provider: str, q, k, v, edit: AttentionEdit, scaling: float, compile_flex: bool):
    """A zero-argument callable running one attention call (prebuilt masks are not timed)."""
    tq, tk = q.shape[2], k.shape[2]
    if provider == "halluc-triton":
        from halluc.kernels.triton_attention import triton_attention
        return lambda: triton_attention(q, k, v, None, scaling=scaling, edit=edit).out
    if provider == "eager":
        return lambda: attention_reference(q, k, v, None, scaling=scaling, edit=edit).out
    cols = edit.column_tensors(q.shape[0], q.shape[1], q.device)
    image = _pad(cols.columns, tk, False)
    bias = None
    if cols.bias is not None:  # column bias + per-head image bias as one (B, H, 1, Tk) float term
        bias = _pad(cols.bias, tk, 0.0)[:, None, None, :] + torch.where(image[:, None, None, :],
                                                                           cols.head_bias[:, :, None, None], 0.0)
    if provider == "sdpa":
        F = torch.nn.functional
        if bias is None:
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=tq > 1, scale=scaling)
        mask = bias if tq == 1 else bias + torch.zeros(tq, tk, device=q.device).masked_fill(
            ~causal_mask(tq, tk, q.device), float("-inf"))
        mask = mask.to(q.dtype).expand(-1, -1, tq, -1)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
    if provider == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False) if compile_flex else flex_attention
        boost = _pad(cols.boost, tk, 0.0) if cols.boost is not None else None
        last = tq - 1
        flat_bias = bias[:, :, 0, :].contiguous() if bias is not None else None  # (B, H, Tk)

        def score_mod(score, b, h, q_idx, kv_idx):
            if boost is not None:
                score = score + torch.where(q_idx == last, boost[b, kv_idx] * score.abs(), 0.0)
            if flat_bias is not None:
                score = score + flat_bias[b, h, kv_idx]
            return score

        block_mask = None
        if tq > 1:
            off = tk - tq
            block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: kv_idx <= q_idx + off, None, None, tq, tk,
                                           device=q.device)
        mod = score_mod if (boost is not None or flat_bias is not None) else None
        return lambda: flex(q, k, v, score_mod=mod, block_mask=block_mask, scale=scaling)
    raise ValueError(provider)


def _pad(t, tk, fill):
    from halluc.kernels.edits import pad_columns
    return pad_columns(t, tk, fill)


def run_micro(args, device, dtype, shape: Shape, prov: dict, write):
    scaling = shape.head_dim ** -0.5
    cases = []
    if "prefill" in args.modes:
        cases.append(("prefill", shape.prompt, shape.prompt))
    if "decode" in args.modes:
        cases += [("decode", 1, tk) for tk in args.contexts]
    for mode, tq, tk in cases:
        for edit_name in args.edits:
            q, k, v, edit = make_case(shape, tq, tk, edit_name, dtype, device)
            ref = attention_reference(q.float(), k.float(), v.float(), None, scaling=scaling, edit=edit).out
            desc = f"B{shape.batch} H{shape.heads} D{shape.head_dim} Tq{tq} Tk{tk} img{shape.image}"
            for provider in args.providers:
                if edit_name not in SUPPORTS[provider]:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn = provider_fn(provider, q, k, v, edit, scaling, compile_flex=device.type == "cuda")
                    out = fn()
                    out = out.transpose(1, 2) if provider in ("sdpa", "flex") else out  # -> (B, Tq, H, D)
                    err = (out.float() - ref).abs().max().item()
                    p50, p20, p80, peak = measure(fn, device, args.reps, args.warmup)
                base = dict(kernel="attention_with_edits", provider=provider, mode=mode, edit=edit_name, shape=desc,
                            dtype=args.dtype, **prov)
                write({**base, "metric": "time", "unit": "ms", "p50": p50, "p20": p20, "p80": p80, "peak_mem_mb": peak})
                write({**base, "metric": "max_abs_err", "unit": "abs", "p50": err})


# ---- end-to-end -------------------------------------------------------------------------------
def llava_config(smoke: bool):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    if smoke:  # the spec's tiny LLaVA: 16 image tokens
        text = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, pad_token_id=0)
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=28, patch_size=7, projection_dim=32)
        return LlavaConfig(vision_config=vision, text_config=text, image_token_index=127, image_seq_length=16), 28
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, pad_token_id=32001,
                       rms_norm_eps=1e-5)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, image_seq_length=576), 336


def run_e2e(args, device, dtype, prov: dict, write):
    from transformers import LlavaForConditionalGeneration

    from halluc.kernels.backend import BACKEND, active_edits, register_backend

    register_backend()
    cfg, image_size = llava_config(args.smoke)
    with torch.device(device):
        torch.manual_seed(0)
        attn = {"text_config": "sdpa", "vision_config": "sdpa"}
        model = LlavaForConditionalGeneration._from_config(cfg, dtype=dtype, attn_implementation=attn).eval()
    n_img = cfg.image_seq_length
    n_text = max(args.prompt - 1 - n_img, 2)
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.tensor([1]), torch.full((n_img,), cfg.image_token_index),
                     torch.randint(3, min(cfg.text_config.vocab_size, 32000) - 1, (n_text,), generator=g)])[None]
    inputs = dict(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                  pixel_values=torch.randn(1, 3, image_size, image_size, generator=g).to(device, dtype))
    img = (ids == cfg.image_token_index).to(device)
    sinks = torch.zeros_like(img)
    sinks[:, 0] = True
    sinks[:, 1 + torch.randperm(n_img, generator=g)[:8]] = True
    layers = [layer.self_attn for layer in model.model.language_model.layers]
    edited = layers[2:] if len(layers) > 2 else layers
    variants = {
        "sdpa": ("sdpa", {}),
        "halluc-noedit": (BACKEND, {}),
        "halluc-pai": (BACKEND, {m: AttentionEdit(columns=img, boost=ScoreBoost(0.2)) for m in edited}),
        "halluc-var": (BACKEND, {m: AttentionEdit(columns=img, redistribute=Redistribution(sinks)) for m in edited}),
    }
    new = args.new_tokens
    shape = f"LLaVA-1.5-7B-shaped random weights, prompt {ids.shape[1]} (img {n_img}), new {new}" if not args.smoke \
        else f"tiny LLaVA, prompt {ids.shape[1]} (img {n_img}), new {new}"
    for provider, (impl, edits) in variants.items():
        model.set_attn_implementation({"text_config": impl})
        with torch.no_grad(), active_edits(edits):
            prefill = lambda: model(**inputs, logits_to_keep=1)  # noqa: E731
            generate = lambda: model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)  # noqa: E731
            p_ms = measure_wall(prefill, device, args.e2e_reps)
            g_ms = measure_wall(generate, device, args.e2e_reps)
        base = dict(kernel="llava_generate", provider=provider, mode="e2e", edit=provider.split("-")[-1], shape=shape,
                    dtype=args.dtype, **prov)
        write({**base, "metric": "prefill", "unit": "ms", "p50": p_ms[0], "p20": p_ms[1], "p80": p_ms[2],
               "peak_mem_mb": p_ms[3]})
        write({**base, "metric": "generate", "unit": "tokens/s", "p50": new / g_ms[0] * 1e3,
               "p20": new / g_ms[2] * 1e3, "p80": new / g_ms[1] * 1e3, "peak_mem_mb": g_ms[3]})


def measure_wall(fn, device, reps: int):
    """Whole-call wall time (ms): median, p20, p80 over `reps` after one warm-up; peak memory (CUDA)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return (statistics.median(times), *quantiles(times), peak)


# ---- CLI --------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny shapes (runs on CPU in seconds; checks the CSV plumbing)")
    p.add_argument("--modes", default="prefill,decode,e2e", help="comma list of prefill, decode, e2e")
    p.add_argument("--edits", default=",".join(EDITS), help=f"comma list of {', '.join(EDITS)}")
    p.add_argument("--providers", default=",".join(PROVIDERS), help=f"comma list of {', '.join(PROVIDERS)}")
    p.add_argument("--contexts", default="640,1024,2048,4096", help="decode key lengths")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--prompt", type=int, default=640, help="prompt length (BOS + image + text)")
    p.add_argument("--new-tokens", type=int, default=64, help="e2e: tokens generated per call")
    p.add_argument("--reps", type=int, default=10, help="CPU timing repetitions (CUDA uses triton's do_bench)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--e2e-reps", type=int, default=3)
    p.add_argument("--device", default=None, help="default: cuda if available (else --smoke is required)")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_attention.csv"))
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.edits = [e for e in args.edits.split(",") if e]
    args.providers = [x for x in args.providers.split(",") if x]
    args.contexts = [int(c) for c in args.contexts.split(",") if c]
    for name, got, allowed in (("mode", args.modes, ("prefill", "decode", "e2e")), ("edit", args.edits, EDITS),
                               ("provider", args.providers, PROVIDERS)):
        bad = sorted(set(got) - set(allowed))
        if bad:
            p.error(f"unknown {name} {', '.join(bad)}; choose from {', '.join(allowed)}")
    if args.smoke:  # tiny everything
        args.prompt = min(args.prompt, 24)
        args.contexts = [40]  # > 32: several key blocks under the interpreter
        args.new_tokens = min(args.new_tokens, 2)
        args.reps, args.warmup, args.e2e_reps = 1, 0, 1
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("no CUDA device: this benchmark needs a GPU (use --smoke for the tiny CPU configuration)")
    dtype = DTYPES[args.dtype]
    shape = Shape(heads=4, head_dim=16, prompt=args.prompt, image=16, sinks=2) if args.smoke else \
        Shape(prompt=args.prompt, image=min(576, args.prompt - 1))
    prov = provenance(device)
    with csv_rows(Path(args.out), COLUMNS, ("provider", "mode", "edit", "shape", "metric", "p50", "unit"),
                  labels=False) as write:
        if {"prefill", "decode"} & set(args.modes):
            run_micro(args, device, dtype, shape, prov, write)
        if "e2e" in args.modes:
            run_e2e(args, device, dtype, prov, write)
    return Path(args.out)


if __name__ == "__main__":
    main()
