"""Per-token decode time of the in-model and one-pass methods (VHR, VISTA, DAMRO, CCA, ONLY, VAF, MemVR, DeCo,
VTI) relative to vanilla, same model.

For each model and each method it supports, `halluc.generate` runs on the same inputs with N new
tokens while a pre-hook on decoder layer 0 timestamps every call. A decode step is a call with one
query token, and
    ms/token    = median interval between consecutive decode steps (one whole step each: the LM,
                  the method's per-step work, logits processing, HF's loop), pooled over repetitions
    prefill_ms  = start of generate -> first decode step (vision tower, the method's extra passes,
                  the prefill and the first token), median over repetitions
so an early EOS or a noisy neighbour skews neither much. `extra_passes` (layer-0 calls over a whole
prompt, minus the prefill) and `rows_per_sample` (batch rows at the prefill / samples) are counted
from the same calls. `ratio` / `prefill_ratio` divide by vanilla's on the same model.

Models (--models):
    tiny      the tiny-* offline models of every family (the default without a GPU)
    small     LLaVA-1.5-shaped, random weights: 336-px CLIP grid (576 image tokens) with narrow widths
              and a 4-layer LM: the real sequence length at CPU cost
    7b        LLaVA-1.5-7B-shaped (CLIP ViT-L/14-336 + Llama-2-7B, vocabulary 32064), random bf16
              weights built on the GPU (no download; timings depend on shapes only): the GPU default
Rows (one per method and model) are appended to --out:
    method, model, device, batch, tokens, ms_per_token, ratio, prefill_ms, prefill_ratio, extra_passes,
    rows_per_sample, torch, transformers, halluc, git_commit, date

    python speed/bench_inmodel.py                      # GPU: 7b; CPU: every tiny model
    python speed/bench_inmodel.py --models small --tokens 16
    python speed/bench_inmodel.py --smoke --out /tmp/b.csv   # tiny-llava, 4 tokens, 1 repetition
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import halluc  # noqa: E402
from halluc.interventions import method_class  # noqa: E402
from speed.common import (  # noqa: E402,F401
    IMAGE,
    PROMPT,
    TINY,
    Counter,
    model_names,
    model_parser,
    parse_model_args,
    provenance,
    run_models,
    shaped_llava,
    step_times,
    take_turns,
)

COLUMNS = ["method", "model", "device", "batch", "tokens", "ms_per_token", "ratio", "prefill_ms", "prefill_ratio",
           "extra_passes", "rows_per_sample", "torch", "transformers", "halluc", "git_commit", "date"]
METHODS = ("vhr", "vista", "damro", "cca", "only", "vaf", "memvr", "deco", "vti")
# VTI computes its vectors once per model (in the warm-up, untimed); the set's size leaves their shapes, and so the
# decode cost, unchanged, so a small calibration keeps the bench short
PARAMS = {"vti": {"num_demos": 4, "num_trials": 4}}


def run_once(lvlm, method: str, images, prompts, tokens: int, device) -> tuple[float, list[float], Counter]:
    """(prefill ms, decode step intervals in ms, counter) of one generate call."""
    counter = Counter(lvlm, device)
    try:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        halluc.generate(lvlm, images, prompts, method, max_new_tokens=tokens, **PARAMS.get(method, {}))
    finally:
        counter.close()
    return (*step_times(counter, start), counter)


def bench_model(lvlm, methods, args, device, prov, write) -> None:
    """Methods take turns within each repetition, so a slow spell of the machine hits them alike."""
    images, prompts = [IMAGE] * args.batch, [PROMPT] * args.batch
    names = ["none", *(m for m in methods if method_class(m)().supports(lvlm.family))]
    for _ in range(args.warmup):
        for method in names:
            run_once(lvlm, method, images, prompts, 3, device)
    decode, start, counters = take_turns(
        names, lambda method: run_once(lvlm, method, images, prompts, args.tokens, device), args.reps)
    for method in names:
        counter = counters[method]
        write({"method": method, "model": lvlm.name, "batch": args.batch, "tokens": len(counter.decode_times()) + 1,
               "ms_per_token": decode[method], "ratio": decode[method] / decode["none"],
               "prefill_ms": start[method], "prefill_ratio": start[method] / start["none"],
               "extra_passes": counter.prefill_passes() - 1, "rows_per_sample": counter.calls[0][0] // args.batch,
               **prov})


def parse_args(argv=None):
    p = model_parser(__doc__, "methods", ",".join(METHODS), METHODS)
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--threads", type=int, default=1, help="CPU: torch threads (1 keeps a busy machine's "
                                                          "scheduling out of per-step times; 0 = torch's default)")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_inmodel.csv"))
    return parse_model_args(p, argv, "methods", "method", METHODS)


def main(argv=None) -> Path:
    args = parse_args(argv)
    threads = torch.get_num_threads()

    def cpu_threads(device: torch.device) -> None:
        if device.type == "cpu" and args.threads:
            torch.set_num_threads(args.threads)

    try:
        return run_models(args, COLUMNS, ("method", "model", "ms_per_token", "ratio", "extra_passes"),
                          lambda lvlm, *rest: bench_model(lvlm, args.methods, args, *rest), on_device=cpu_threads)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
