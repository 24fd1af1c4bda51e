"""Per-token decode time of the attention-editing methods (PAI, VAR) relative to vanilla, same model.

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

    python benchmarks/bench_attention_methods.py                    # GPU: 7b; CPU: every tiny model
    python benchmarks/bench_attention_methods.py --models small --tokens 16
    python benchmarks/bench_attention_methods.py --smoke --out /tmp/b.csv   # tiny-llava, 4 tokens, seconds
"""
from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import halluc  # noqa: E402
from halluc.kernels import backend as kernel_backend  # noqa: E402

COLUMNS = ["method", "variant", "model", "device", "impl", "batch", "tokens", "ms_per_token", "ratio", "prefill_ms",
           "prefill_ratio", "rows_per_sample", "edited_calls", "torch", "transformers", "triton", "halluc",
           "git_commit", "date"]
VARIANTS = {  # name -> (method, parameters)
    "none": ("none", {}),
    "pai": ("pai", {}),
    "pai-boost": ("pai", {"gamma": 1.0}),
    "var": ("var", {"tau": 1.5}),
}
TINY = ("tiny-llava", "tiny-llava-next", "tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-instructblip")
PROMPT = "Please describe this image in detail."
IMAGE = REPO / "halluc" / "assets" / "example.png"


def provenance(device: torch.device) -> dict:
    import transformers
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=10).stdout.strip()
        commit = (run("rev-parse", "--short", "HEAD") + ("-dirty" if run("status", "--porcelain") else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = "none"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__, "triton": triton,
            "halluc": halluc.__version__, "git_commit": commit,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def shaped_llava(size: str, device: torch.device) -> halluc.LVLM:
    """A LLaVA-1.5-shaped model with random weights and a byte-level tokenizer (no download)."""
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from halluc.models.llava import LLAVA
    from halluc.models.tiny import LLAVA_TEMPLATE, byte_tokenizer

    big = size == "7b"
    tok = byte_tokenizer(["<pad>", "<s>", "</s>", "<unk>", "<image>"], bos="<s>", eos="</s>", pad="<pad>",
                         unk="<unk>", extra={"image_token": "<image>"})
    lm = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32) if big else \
        dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8)
    vit = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16) if big else \
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    text = LlamaConfig(**lm, num_key_value_heads=lm["num_attention_heads"], vocab_size=32064 if big else len(tok),
                       max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = CLIPVisionConfig(**vit, image_size=336, patch_size=14, projection_dim=768)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.image_token_id,
                         image_seq_length=576, vision_feature_layer=-2, vision_feature_select_strategy="default")
    processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 336},
                                                                     crop_size={"height": 336, "width": 336}),
                               tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    kernel_backend.register_backend()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = LlavaForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation={"text_config": kernel_backend.BACKEND, "vision_config": "sdpa"})
    name = "llava-1.5-7b-shaped (random)" if big else "llava-1.5-small-shaped (random)"
    return halluc.LVLM(model=model.eval(), processor=processor, adapter=LLAVA, name=name, revision="random-init seed=0")


class Probe:
    """One generate call: layer-0 calls (rows, query length, time) and edit-path attention calls."""

    def __init__(self, lvlm: halluc.LVLM, device: torch.device):
        self.calls: list[tuple[int, int, float]] = []
        self.edited = 0
        self.impls: set[str] = set()
        self.sync = device.type == "cuda"
        layer0 = lvlm.adapter.resolve(lvlm.model, "layers.0")
        self.handle = layer0.register_forward_pre_hook(self._record, with_kwargs=True)
        self.original = kernel_backend.attention  # what the backend calls on its edit path

        def counted(*args, **kwargs):
            result = self.original(*args, **kwargs)
            self.edited += 1
            self.impls.add(result.impl)
            return result

        kernel_backend.attention = counted

    def _record(self, module, args, kwargs):
        if self.sync:
            torch.cuda.synchronize()
        hidden = args[0] if args else kwargs["hidden_states"]
        self.calls.append((*hidden.shape[:2], time.perf_counter()))

    def close(self) -> None:
        self.handle.remove()
        kernel_backend.attention = self.original

    def decode_times(self) -> list[float]:
        return [t for _, length, t in self.calls if length == 1]


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
    steps = probe.decode_times()
    first = steps[0] if steps else time.perf_counter()
    return (first - start) * 1e3, [(b - a) * 1e3 for a, b in zip(steps, steps[1:])], probe


def variant_params(name: str, lvlm: halluc.LVLM) -> dict:
    params = dict(VARIANTS[name][1])
    if name != "none" and lvlm.adapter.num_layers(lvlm.model) <= 2:
        params["layers"] = list(range(lvlm.adapter.num_layers(lvlm.model)))  # the default 2..L−1 is empty
    return params


def bench_model(lvlm, variants, args, device, prov, write) -> None:
    images, prompts = [IMAGE] * args.batch, [PROMPT] * args.batch
    names = ["none", *(v for v in variants if v != "none")]
    params = {v: variant_params(v, lvlm) for v in names}
    for _ in range(args.warmup):
        for v in names:
            run_once(lvlm, VARIANTS[v][0], params[v], images, prompts, 3, device)
    prefill, steps, probes = {v: [] for v in names}, {v: [] for v in names}, {}
    for _ in range(args.reps):
        for v in names:
            p, s, probes[v] = run_once(lvlm, VARIANTS[v][0], params[v], images, prompts, args.tokens, device)
            prefill[v].append(p)
            steps[v] += s
    decode = {v: statistics.median(steps[v]) if steps[v] else float("nan") for v in names}
    start = {v: statistics.median(prefill[v]) for v in names}
    for v in names:
        probe = probes[v]
        shown = ";".join(f"{k}={val}" for k, val in params[v].items())
        write({"method": VARIANTS[v][0], "variant": f"{v}" + (f" ({shown})" if shown else ""), "model": lvlm.name,
               "impl": ",".join(sorted(probe.impls)) or "sdpa", "batch": args.batch,
               "tokens": len(probe.decode_times()) + 1, "ms_per_token": decode[v], "ratio": decode[v] / decode["none"],
               "prefill_ms": start[v], "prefill_ratio": start[v] / start["none"],
               "rows_per_sample": probe.calls[0][0] // args.batch, "edited_calls": probe.edited, **prov})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny-llava, 4 tokens, 1 repetition (seconds, CPU)")
    p.add_argument("--models", default=None, help="comma list of tiny, small, 7b or tiny-* names (default: 7b on "
                                                   "a GPU, tiny otherwise)")
    p.add_argument("--variants", default="pai,pai-boost,var", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--tokens", type=int, default=None, help="new tokens per timed call (default 64 GPU, 32 CPU)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_attention_methods.csv"))
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    bad = sorted(set(args.variants) - set(VARIANTS))
    if bad:
        p.error(f"unknown variant {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    if args.smoke:
        args.models, args.tokens, args.reps, args.warmup = args.models or "tiny-llava", args.tokens or 4, 1, 0
    return args


def model_names(spec: str | None, device: torch.device) -> list[str]:
    names = (spec or ("7b" if device.type == "cuda" else "tiny")).split(",")
    expanded = [n for name in names for n in (TINY if name == "tiny" else (name,)) if n]
    bad = [n for n in expanded if n not in (*TINY, "small", "7b")]
    if bad:
        raise SystemExit(f"unknown model {bad[0]}; choose from tiny, small, 7b, {', '.join(TINY)}")
    if "7b" in expanded and device.type != "cuda":
        raise SystemExit("the 7b-shaped model needs a GPU (use --models tiny or small on CPU)")
    return expanded


def main(argv=None) -> Path:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = model_names(args.models, device)
    args.tokens = args.tokens or (64 if device.type == "cuda" else 32)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prov = provenance(device)
    new_file = not out.exists() or out.stat().st_size == 0
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()

        def write(row):
            row = {c: ("" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c]))
                   for c in COLUMNS}
            writer.writerow(row)
            f.flush()
            print(", ".join(f"{c}={row[c]}" for c in ("variant", "model", "impl", "ms_per_token", "ratio",
                                                        "rows_per_sample", "edited_calls")), flush=True)

        for name in names:
            lvlm = shaped_llava(name, device) if name in ("small", "7b") else halluc.load(name, device=str(device))
            bench_model(lvlm, args.variants, args, device, prov, write)
            del lvlm
    return out


if __name__ == "__main__":
    main()
