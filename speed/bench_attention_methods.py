"""Per-token decode time of the attention-editing methods (PAI, VAR, TAME, FarSight) relative to vanilla, same
model.

For each model, `halluc.generate` runs vanilla and each method variant on the same inputs (greedy,
`--tokens` new tokens); decoder layer 0's calls are timed, so
    decode ms/token = median interval between consecutive decode steps (calls with one query token)
    prefill ms      = from the call to the first decode step (vision tower, prefill, first token)
and `ratio` / `prefill_ratio` are over vanilla's on the same model. Variants take turns within each
repetition, so a slow spell of the machine hits them alike. Also counted per call: `rows_per_sample`
(batch rows at the prefill / samples: 2 with PAI's guidance) and `edited_calls` (attention calls that
took the halluc edit path, i.e. the fused kernel on CUDA or the torch reference on CPU).

Variants (--variants):
    pai        PAI as shipped: α 0.2 boost in layers 2..L−1 + guidance γ 1.1 (1 extra row per sample)
    pai-boost  the boost alone (γ = 1: no extra row)
    var        VAR: sink detection at prefill + redistribution in layers 2..L−1
    tame       TAME: every layer's scores × e²/σ = 1.69 (SDPA with a scaled `scaling`: `edited_calls` 0)
    farsight   FarSight as shipped (variant "paper"): register null keys on the prompt rows of every layer;
               decode rows have none (plain SDPA); variant "code" is the identity and needs no row
Random weights have no massive activations (|h/rms(h)| stays below ~4), so VAR runs with τ = 1.5
(sink dimensions found from the first token, as by default) to have sinks and hence an active edit,
as on a real model; the kernel's cost does not depend on how many columns are sinks
(`edited_calls` shows the edit ran). On the 2-layer tiny models
every variant edits layers 0..1 (the default 2..L−1 is empty there).

Models (--models):
    tiny      the tiny-* offline models of every family (the default without a GPU)
    small     LLaVA-1.5-shaped, random weights: 336-px CLIP grid (576 image tokens), narrow widths,
              4-layer LM: the real sequence length at CPU cost
    7b        LLaVA-1.5-7B-shaped (CLIP ViT-L/14-336 + Llama-2-7B), random bf16 weights built on the GPU
              (no download; timings depend on shapes only): the GPU default
Rows (one per variant and model) are appended to --out:
    method, variant, model, device, impl, batch, tokens, ms_per_token, ratio, prefill_ms, prefill_ratio,
    rows_per_sample, edited_calls, torch, transformers, triton, halluc, git_commit, date

    python speed/bench_attention_methods.py                    # GPU: 7b; CPU: every tiny model
    python speed/bench_attention_methods.py --models small --tokens 16
    python speed/bench_attention_methods.py --smoke --out /tmp/b.csv   # tiny-llava, 4 tokens, seconds
"""
from __future__ import annotations

import importlib.metadata
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import halluc  # noqa: E402
from halluc.kernels import backend as kernel_backend  # noqa: E402
from speed.common import (  # noqa: E402,F401
    IMAGE,
    PROMPT,
    TINY,
    Counter,
    model_names,
    model_parser,
    parse_model_args,
    run_models,
    shaped_llava,
    step_times,
    take_turns,
)
from speed.common import provenance as common_provenance  # noqa: E402

COLUMNS = ["method", "variant", "model", "device", "impl", "batch", "tokens", "ms_per_token", "ratio", "prefill_ms",
           "prefill_ratio", "rows_per_sample", "edited_calls", "torch", "transformers", "triton", "halluc",
           "git_commit", "date"]
VARIANTS = {  # name -> (method, parameters)
    "none": ("none", {}),
    "pai": ("pai", {}),
    "pai-boost": ("pai", {"gamma": 1.0}),
    "var": ("var", {"tau": 1.5}),
    "tame": ("tame", {}),
    "farsight": ("farsight", {}),
}


def provenance(device: torch.device) -> dict:
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = "none"
    return common_provenance(device, triton=triton)


class Probe(Counter):
    """One generate call: layer-0 calls (rows, query length, time) and edit-path attention calls."""

    def __init__(self, lvlm: halluc.LVLM, device: torch.device):
        super().__init__(lvlm, device)
        self.edited = 0
        self.impls: set[str] = set()
        self.original = kernel_backend.attention  # what the backend calls on its edit path

        def counted(*args, **kwargs):
            result = self.original(*args, **kwargs)
            self.edited += 1
            self.impls.add(result.impl)
            return result

        kernel_backend.attention = counted

    def close(self) -> None:
        super().close()
        kernel_backend.attention = self.original


def run_once(lvlm, method: str, params: dict, images, prompts, tokens: int, device) -> tuple[float, list[float], Probe]:
    """(prefill ms, decode step intervals in ms, probe) of one generate call."""
    probe = Probe(lvlm, device)
    try:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        halluc.generate(lvlm, images, prompts, method, max_new_tokens=tokens, **params)
    finally:
        probe.close()
    return (*step_times(probe, start), probe)


def variant_params(name: str, lvlm: halluc.LVLM) -> dict:
    params = dict(VARIANTS[name][1])
    if name not in ("none", "tame") and lvlm.adapter.num_layers(lvlm.model) <= 2:
        params["layers"] = list(range(lvlm.adapter.num_layers(lvlm.model)))  # the default 2..L−1 is empty
    return params


def bench_model(lvlm, variants, args, device, prov, write) -> None:
    images, prompts = [IMAGE] * args.batch, [PROMPT] * args.batch
    names = ["none", *(v for v in variants if v != "none")]
    params = {v: variant_params(v, lvlm) for v in names}
    for _ in range(args.warmup):
        for v in names:
            run_once(lvlm, VARIANTS[v][0], params[v], images, prompts, 3, device)
    decode, start, probes = take_turns(
        names, lambda v: run_once(lvlm, VARIANTS[v][0], params[v], images, prompts, args.tokens, device), args.reps)
    for v in names:
        probe = probes[v]
        shown = ";".join(f"{k}={val}" for k, val in params[v].items())
        write({"method": VARIANTS[v][0], "variant": f"{v}" + (f" ({shown})" if shown else ""), "model": lvlm.name,
               "impl": ",".join(sorted(probe.impls)) or "sdpa", "batch": args.batch,
               "tokens": len(probe.decode_times()) + 1, "ms_per_token": decode[v], "ratio": decode[v] / decode["none"],
               "prefill_ms": start[v], "prefill_ratio": start[v] / start["none"],
               "rows_per_sample": probe.calls[0][0] // args.batch, "edited_calls": probe.edited, **prov})


def parse_args(argv=None):
    p = model_parser(__doc__, "variants", "pai,pai-boost,var,tame,farsight", VARIANTS)
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--threads", type=int, default=1, help="CPU: torch threads (1 keeps a busy machine's "
                                                          "scheduling out of per-step times; 0 = torch's default)")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_attention_methods.csv"))
    return parse_model_args(p, argv, "variants", "variant", VARIANTS)


def main(argv=None) -> Path:
    args = parse_args(argv)
    shown = ("variant", "model", "impl", "ms_per_token", "ratio", "rows_per_sample", "edited_calls")
    threads = torch.get_num_threads()

    def cpu_threads(device: torch.device) -> None:
        if device.type == "cpu" and args.threads:
            torch.set_num_threads(args.threads)

    try:
        return run_models(args, COLUMNS, shown, lambda lvlm, *rest: bench_model(lvlm, args.variants, args, *rest),
                          prov=provenance, on_device=cpu_threads)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
