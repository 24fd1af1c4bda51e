"""Per-token decode time and peak memory of the decoding methods (VCD, RITUAL, RITUAL+VCD, AGLA, OPERA, SID,
ICD, M3ID, AvisC, DoLa) relative to vanilla decoding in the same mode on the same model.

Each method runs in the modes it is meant for -- the contrastive/ensemble methods greedy and sampling
(their papers' protocol), OPERA as a 5-beam search -- and vanilla runs in the same modes. A pre-hook
on decoder layer 0 timestamps every call (`common.Counter`), so
    ms/token    = median interval between consecutive decode steps (calls with one query token): one
                  whole step (every view's rows, OPERA's candidate probe, logits processing, HF's loop)
    prefill_ms  = start of generate -> first decode step (view construction, AGLA's matcher, the
                  vision tower, the prefill), median over repetitions
    peak_mb     = peak CUDA memory above what was allocated before the call (empty on CPU)
    rows_per_sample = batch rows of a decode step per sample (views x beams; OPERA: beams x candidates)
`ratio` and `prefill_ratio` divide by vanilla's in the same mode. The reference row `none-2-rows` is
vanilla decoding with every sample twice in the batch (rows_per_sample 2): what one extra batch row
costs by itself on this machine, the floor of every method that adds one (VCD, RITUAL, AGLA, SID, ICD,
M3ID: its text-only row is left-padded to the image rows' width, so it costs a full row; AvisC).

Models (--models): `tiny` (every tiny-* offline model; the CPU default), `small` (LLaVA-1.5-shaped,
576 image tokens, narrow 4-layer LM, random weights: the real sequence length at CPU cost) and `7b`
(LLaVA-1.5-7B-shaped random bf16 weights built on the GPU; the GPU default). Shapes come from
`speed/common.py`.

Rows are appended to --out (long format, one row per method, mode and model):
    method, model, mode, batch, tokens, ms_per_token, ratio, prefill_ms, prefill_ratio, peak_mb,
    rows_per_sample, device, torch, transformers, halluc, git_commit, date

    python speed/bench_decoding.py                           # GPU: 7b; CPU: every tiny model
    python speed/bench_decoding.py --models small --tokens 16 --methods vcd,opera
    python speed/bench_decoding.py --smoke --out /tmp/d.csv   # tiny-llava, 4 tokens, 1 repetition
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import halluc  # noqa: E402
from halluc.errors import HallucError  # noqa: E402
from halluc.interventions import method_class  # noqa: E402
from halluc.interventions.registry import expand_aliases  # noqa: E402
from speed.common import (  # noqa: E402,F401
    IMAGE,
    PROMPT,
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

COLUMNS = ["method", "model", "mode", "batch", "tokens", "ms_per_token", "ratio", "prefill_ms", "prefill_ratio",
           "peak_mb", "rows_per_sample", "device", "torch", "transformers", "halluc", "git_commit", "date"]
MODES = {"greedy": {}, "sample": {"do_sample": True, "seed": 0}, "beam": {"num_beams": 5}}
TWO_ROWS = "none-2-rows"  # vanilla on every sample twice (reference row)
METHODS = {"vcd": ("greedy", "sample"), "ritual": ("greedy", "sample"), "ritual-vcd": ("greedy", "sample"),
           "agla": ("greedy", "sample"), "opera": ("beam",), "sid": ("greedy", "sample"), "icd": ("greedy", "sample"),
           "m3id": ("greedy", "sample"), "avisc": ("greedy", "sample"), "dola": ("greedy", "sample")}


def run_once(lvlm, method: str, mode: str, params: dict, tokens: int, batch: int, device):
    """(prefill ms, decode step intervals in ms, counter, peak MB or None) of one generate call."""
    counter = Counter(lvlm, device)
    cuda = device.type == "cuda"
    try:
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AGLA's matcher fallback notice, once per call
            halluc.generate(lvlm, [IMAGE] * batch, [PROMPT] * batch, method, max_new_tokens=tokens,
                            **MODES[mode], **(params if method != "none" else {}))
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20 if cuda else None
    finally:
        counter.close()
    return (*step_times(counter, start), counter, peak)


def bench_model(lvlm, methods, args, device, prov, write) -> None:
    """Methods take turns within each repetition, so a slow spell of the machine hits them alike."""
    modes = [mode for mode in MODES if any(mode in METHODS[m] for m in methods)]
    runs = [("none", mode) for mode in modes]
    # vanilla with each sample twice: what a second batch row alone costs, the floor of a method adding one
    runs += [(TWO_ROWS, mode) for mode in modes if any(mode in METHODS[m] for m in methods if m != "opera")]
    runs += [(m, mode) for m in methods if supported(m, lvlm.family) for mode in METHODS[m]]
    params = {"agla": {"matcher": args.agla_matcher}}

    def once(run, tokens):
        method, mode = run
        if method == TWO_ROWS:
            return run_once(lvlm, "none", mode, {}, tokens, 2 * args.batch, device)
        return run_once(lvlm, method, mode, params.get(method, {}), tokens, args.batch, device)

    for run in list(runs):  # warm-up; a method that refuses this model (AGLA's matcher on InstructBLIP) is skipped
        try:
            for _ in range(max(args.warmup, 1)):
                once(run, 3)
        except HallucError as err:
            print(f"skipped {run[0]} ({run[1]}) on {lvlm.name}: {err}", flush=True)
            runs.remove(run)
    decode, start, last = take_turns(runs, lambda run: once(run, args.tokens), args.reps)
    for method, mode in runs:
        counter, peak = last[(method, mode)]
        # a replacement search runs one sample at a time
        samples = 1 if method != TWO_ROWS and any(method_class(m).replaces_search
                                                  for m in expand_aliases([method])) else args.batch
        write({"method": method, "model": lvlm.name, "mode": mode, "batch": args.batch,
               "tokens": len(counter.decode_times()) + 1, "ms_per_token": decode[(method, mode)],
               "ratio": decode[(method, mode)] / decode[("none", mode)], "prefill_ms": start[(method, mode)],
               "prefill_ratio": start[(method, mode)] / start[("none", mode)], "peak_mb": peak,
               "rows_per_sample": max(r for r, n, _ in counter.calls if n == 1) // samples, **prov})


def supported(name: str, family: str) -> bool:
    """Whether a method, or every method of an alias's stack (ritual-vcd), runs on `family`."""
    return all(method_class(m)().supports(family) for m in expand_aliases([name]))


def parse_args(argv=None):
    p = model_parser(__doc__, "methods", ",".join(METHODS), METHODS)
    p.add_argument("--agla-matcher", default="auto", choices=("auto", "blip", "lvlm-attention"))
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_decoding.csv"))
    return parse_model_args(p, argv, "methods", "method", METHODS)


def main(argv=None) -> Path:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run_models(args, COLUMNS, ("method", "model", "mode", "ms_per_token", "ratio", "peak_mb"),
                          lambda lvlm, *rest: bench_model(lvlm, args.methods, args, *rest))
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
