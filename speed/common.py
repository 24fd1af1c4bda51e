"""Pieces the benchmark scripts share: provenance, the long-format CSV writer, the model list, the
LLaVA-1.5-shaped random model, the layer-0 step counter and the turn-taking measuring loop.

The scripts put the repository root on `sys.path` and import this as `speed.common`, so they
run both as `python speed/bench_x.py` and as `speed.bench_x`.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import io
import os
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import halluc  # noqa: E402
from halluc.modeling.registry import families  # noqa: E402

TINY = tuple(f.tiny_name for f in families())  # every family's tiny offline model
PROMPT = "Please describe this image in detail."
IMAGE = REPO / "halluc" / "assets" / "example.png"


# ---- provenance and CSV rows ------------------------------------------------------------------
def git_commit() -> str:
    """The short HEAD commit, `-dirty` when the tree has changes; `unknown` without git."""
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=10).stdout.strip()
        return (run("rev-parse", "--short", "HEAD") + ("-dirty" if run("status", "--porcelain") else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device: torch.device, **extra) -> dict:
    """Device name, library versions (plus `extra`, e.g. triton), git commit and UTC date of a run."""
    import transformers
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__, **extra,
            "halluc": halluc.__version__, "git_commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


@contextmanager
def csv_rows(path: Path, columns: Sequence[str], shown: Sequence[str], labels: bool = True) -> Iterator[Callable]:
    """Append rows to a long-format CSV (a header only for a new or empty file); yields `write(row)`.

    `write` keeps `columns` (missing or None -> empty, floats to 6 significant digits), flushes, and
    prints the `shown` columns (as `name=value` with `labels`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        if new_file:
            writer.writeheader()

        def write(row: dict) -> None:
            row = {c: ("" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c]))
                   for c in columns}
            writer.writerow(row)
            f.flush()
            print(", ".join(f"{c}={row[c]}" if labels else f"{row[c]}" for c in shown), flush=True)

        yield write


# ---- command line of the model benchmarks -----------------------------------------------------
def model_parser(doc: str, choice: str, default: str, choices: Sequence[str]) -> argparse.ArgumentParser:
    """The options every model benchmark has, in order: --smoke, --models, --<choice>, --tokens, --batch,
    --reps, --warmup."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny-llava, 4 tokens, 1 repetition (seconds, CPU)")
    p.add_argument("--models", default=None, help="comma list of tiny, small, 7b or tiny-* names (default: 7b on "
                                                   "a GPU, tiny otherwise)")
    p.add_argument(f"--{choice}", default=default, help=f"comma list of {', '.join(choices)}")
    p.add_argument("--tokens", type=int, default=None, help="new tokens per timed call (default 64 GPU, 32 CPU)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    return p


def parse_model_args(p: argparse.ArgumentParser, argv, choice: str, noun: str, choices: Sequence[str]):
    """Parse; split the comma list `choice` and refuse unknown names (as `noun`); apply --smoke."""
    args = p.parse_args(argv)
    picked = [x for x in getattr(args, choice).split(",") if x]
    setattr(args, choice, picked)
    bad = sorted(set(picked) - set(choices))
    if bad:
        p.error(f"unknown {noun} {', '.join(bad)}; choose from {', '.join(choices)}")
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


def run_models(args, columns: Sequence[str], shown: Sequence[str], bench_model: Callable,
               prov: Callable[[torch.device], dict] = provenance, on_device: Callable | None = None) -> Path:
    """The model benchmarks' main: resolve the device, models and --tokens default, then append the rows of
    `bench_model(lvlm, device, prov, write)` for each model to --out (`on_device(device)` runs just before)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = model_names(args.models, device)
    args.tokens = args.tokens or (64 if device.type == "cuda" else 32)
    info = prov(device)
    with csv_rows(Path(args.out), columns, shown) as write:
        if on_device is not None:
            on_device(device)
        for name in names:
            lvlm = load_model(name, device)
            bench_model(lvlm, device, info, write)
            del lvlm
    return Path(args.out)


def load_model(name: str, device: torch.device) -> halluc.LVLM:
    """`small` / `7b`: the LLaVA-1.5-shaped random model; otherwise a tiny-* offline model."""
    return shaped_llava(name, device) if name in ("small", "7b") else halluc.load(name, device=str(device))


def shaped_llava(size: str, device: torch.device) -> halluc.LVLM:
    """A LLaVA-1.5-shaped model with random weights and a byte-level tokenizer (no download)."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from halluc.kernels.backend import BACKEND, register_backend
    from halluc.modeling.llava import LLAVA
    from halluc.modeling.tiny import LLAVA_TEMPLATE, byte_tokenizer

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
    return halluc.LVLM(model=model.eval(), processor=processor, adapter=LLAVA.adapter, name=name,
                       revision="random-init seed=0")


# ---- measuring decode steps -------------------------------------------------------------------
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

    def close(self) -> None:
        self.handle.remove()

    def decode_times(self) -> list[float]:
        return [t for _, length, t in self.calls if length == 1]

    def prefill_passes(self) -> int:
        return sum(length > 1 for _, length, _ in self.calls)


def step_times(counter: Counter, start: float) -> tuple[float, list[float]]:
    """(start -> first decode step in ms, intervals between consecutive decode steps in ms)."""
    steps = counter.decode_times()
    first = steps[0] if steps else time.perf_counter()
    return (first - start) * 1e3, [(b - a) * 1e3 for a, b in zip(steps, steps[1:])]


def take_turns(keys: Sequence, run: Callable, reps: int) -> tuple[dict, dict, dict]:
    """`reps` rounds in which every key runs once, so a slow spell of the machine hits them alike.

    `run(key)` returns (prefill ms, decode step intervals in ms, *extra); the result is, per key, the
    median ms/token (steps pooled over rounds), the median prefill ms and the last round's extra (the
    one value itself when there is one)."""
    prefill, steps, last = {k: [] for k in keys}, {k: [] for k in keys}, {}
    for _ in range(reps):
        for key in keys:
            p, s, *extra = run(key)
            last[key] = extra[0] if len(extra) == 1 else tuple(extra)
            prefill[key].append(p)
            steps[key] += s
    decode = {k: statistics.median(steps[k]) if steps[k] else float("nan") for k in keys}
    start = {k: statistics.median(prefill[k]) for k in keys}
    return decode, start, last


def reference_tree(revision: str, where: Path) -> Path:
    """The repository's files at `revision`, written under `where` (git archive: no checkout touched)."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision],
                                 check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or str(error).encode()
        raise SystemExit(f"cannot take revision {revision} out of git: {detail.decode().strip()}") from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where
