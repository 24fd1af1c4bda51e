"""Per-token decode time of the in-model methods (VHR, VISTA, DAMRO, CCA) relative to vanilla, same model.

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

    python benchmarks/bench_inmodel.py                      # GPU: 7b; CPU: every tiny model
    python benchmarks/bench_inmodel.py --models small --tokens 16
    python benchmarks/bench_inmodel.py --smoke --out /tmp/b.csv   # tiny-llava, 4 tokens, 1 repetition
"""
from __future__ import annotations

import argparse
import csv
import datetime
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
from halluc.interventions import method_class  # noqa: E402

COLUMNS = ["method", "model", "device", "batch", "tokens", "ms_per_token", "ratio", "prefill_ms", "prefill_ratio",
           "extra_passes", "rows_per_sample", "torch", "transformers", "halluc", "git_commit", "date"]
METHODS = ("vhr", "vista", "damro", "cca")
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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
            "halluc": halluc.__version__, "git_commit": commit,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def shaped_llava(size: str, device: torch.device) -> halluc.LVLM:
    """A LLaVA-1.5-shaped model with random weights and a byte-level tokenizer (no download)."""
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from halluc.kernels.backend import BACKEND, register_backend
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
    register_backend()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = LlavaForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation={"text_config": BACKEND, "vision_config": "sdpa"})
    name = "llava-1.5-7b-shaped (random)" if big else "llava-1.5-small-shaped (random)"
    return halluc.LVLM(model=model.eval(), processor=processor, adapter=LLAVA, name=name, revision="random-init seed=0")


class Counter:
    """Layer-0 calls of one generate: (rows, query length, perf_counter seconds) each."""

    def __init__(self, lvlm: halluc.LVLM, device: torch.device):
        self.calls: list[tuple[int, int, float]] = []
        self.sync = device.type == "cuda"
        layer0 = lvlm.adapter.resolve(lvlm.model, "layers.0")
        self.handle = layer0.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        if self.sync:
            torch.cuda.synchronize()
        hidden = args[0] if args else kwargs["hidden_states"]
        self.calls.append((*hidden.shape[:2], time.perf_counter()))

    def decode_times(self) -> list[float]:
        return [t for _, length, t in self.calls if length == 1]

    def prefill_passes(self) -> int:
        return sum(length > 1 for _, length, _ in self.calls)


def run_once(lvlm, method: str, images, prompts, tokens: int, device) -> tuple[float, list[float], Counter]:
    """(prefill ms, decode step intervals in ms, counter) of one generate call."""
    counter = Counter(lvlm, device)
    try:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        halluc.generate(lvlm, images, prompts, method, max_new_tokens=tokens)
    finally:
        counter.handle.remove()
    steps = counter.decode_times()
    first = steps[0] if steps else time.perf_counter()
    return (first - start) * 1e3, [(b - a) * 1e3 for a, b in zip(steps, steps[1:])], counter


def bench_model(lvlm, methods, args, device, prov, write) -> None:
    """Methods take turns within each repetition, so a slow spell of the machine hits them alike."""
    images, prompts = [IMAGE] * args.batch, [PROMPT] * args.batch
    names = ["none", *(m for m in methods if method_class(m)().supports(lvlm.family))]
    for _ in range(args.warmup):
        for method in names:
            run_once(lvlm, method, images, prompts, 3, device)
    prefill, steps, counters = {m: [] for m in names}, {m: [] for m in names}, {}
    for _ in range(args.reps):
        for method in names:
            p, s, counters[method] = run_once(lvlm, method, images, prompts, args.tokens, device)
            prefill[method].append(p)
            steps[method] += s
    decode = {m: statistics.median(steps[m]) if steps[m] else float("nan") for m in names}
    start = {m: statistics.median(prefill[m]) for m in names}
    for method in names:
        counter = counters[method]
        write({"method": method, "model": lvlm.name, "batch": args.batch, "tokens": len(counter.decode_times()) + 1,
               "ms_per_token": decode[method], "ratio": decode[method] / decode["none"],
               "prefill_ms": start[method], "prefill_ratio": start[method] / start["none"],
               "extra_passes": counter.prefill_passes() - 1, "rows_per_sample": counter.calls[0][0] // args.batch,
               **prov})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny-llava, 4 tokens, 1 repetition (seconds, CPU)")
    p.add_argument("--models", default=None, help="comma list of tiny, small, 7b or tiny-* names (default: 7b on "
                                                   "a GPU, tiny otherwise)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--tokens", type=int, default=None, help="new tokens per timed call (default 64 GPU, 32 CPU)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--threads", type=int, default=1, help="CPU: torch threads (1 keeps a busy machine's "
                                                          "scheduling out of per-step times; 0 = torch's default)")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_inmodel.csv"))
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    bad = sorted(set(args.methods) - set(METHODS))
    if bad:
        p.error(f"unknown method {', '.join(bad)}; choose from {', '.join(METHODS)}")
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
    threads = torch.get_num_threads()
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
            print(", ".join(f"{c}={row[c]}" for c in ("method", "model", "ms_per_token", "ratio", "extra_passes")),
                  flush=True)

        try:
            if device.type == "cpu" and args.threads:
                torch.set_num_threads(args.threads)
            for name in names:
                lvlm = shaped_llava(name, device) if name in ("small", "7b") else halluc.load(name, device=str(device))
                bench_model(lvlm, args.methods, args, device, prov, write)
                del lvlm
        finally:
            torch.set_num_threads(threads)
    return out


if __name__ == "__main__":
    main()
