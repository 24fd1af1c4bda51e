"""Per-step scores of every method on the offline models: the regression guard for refactors.

`python -m tests.golden.record_scores` writes `tests/golden/scores.pt`; `tests/test_golden_scores.py`
recomputes the same runs and compares. A change may move these numbers only as a deliberate fidelity
fix, re-recorded in the same commit with the reason in its message. A new method is added with
`python -m tests.golden.record_scores --append METHOD ...`, which records only its cases and leaves
every recorded case as it is.

Each case: two left-padded prompts with two images, greedy per-step scores (B, steps, V), plus the
tokens of seeded sampling and of a 2-beam search (OPERA, HALC: their own beam search, tokens only).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image

import halluc
from halluc.interventions import make_methods

GOLDEN = Path(__file__).with_name("scores.pt")
MODELS = ["toy-llava", "tiny-llava", "tiny-llava-next", "tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-instructblip"]
PROMPTS = ["Describe the image in detail.", "Is there a dog in the image?"]
STEPS = 5
# parameters that make each method act on the 2- and 3-layer offline models (defaults otherwise)
CASES = {
    "none": {},
    "vcd": {},
    "ritual": {},
    "ritual-vcd": {},
    "agla": {"matcher": "lvlm-attention"},
    "damro": {},
    "pai": {"layers": [0, 1]},
    "var": {"layers": [0, 1], "tau": 2.0},
    "vhr": {},
    "vista": {},
    "cca": {},
    "opera": {"preset": "fast"},
    "only": {},
    "vaf": {},
    "memvr": {"threshold": 0.0},  # fires at the first checked layer of every forward
    "deco": {},
    "dola": {},
    # skip_rate 0: every object word checked; the attention detector and matcher (no DINO/BLIP weights offline)
    "halc": {"beams": 2, "skip_rate": 0.0, "detector": "lvlm-attention", "matcher": "lvlm-attention"},
    "sid": {"select_layer": 0},  # the 2-layer tiny models hide tokens in layer 1
    "icd": {},
    "m3id": {},
    "tame": {},
    "farsight": {},
    "avisc": {},
    "vti": {"num_demos": 3, "num_trials": 2},  # vectors from 3 toy-world records, computed on first use
    # the controls (yes-bias moves the answer only where p(Yes) + p(No) passes `mass`: 0 on the tiny models)
    "yes-prompt": {},
    "yes-bias": {"mass": 0.0},
    "logit-shift": {"delta": 5.0},
    "apc": {},
}
DECODING_ONLY_TOKENS = {"opera", "halc"}
UNSUPPORTED = {("instructblip", "agla"), ("instructblip", "halc")}  # no 2-D grid for the attention matcher
# per-family parameters where the method's default does not apply there
FAMILY_PARAMS = {("llava_next", "damro"): {"variant": "mask"}}  # the official variant is LLaVA-1.5 only


def images() -> list[Image.Image]:
    out = []
    for i, colour in enumerate([(200, 30, 30), (20, 120, 220)]):
        img = Image.new("RGB", (40, 32), colour)
        img.paste((255, 255, 255), (5 + 10 * i, 5, 20 + 10 * i, 20))
        out.append(img)
    return out


def supported(lvlm, method: str) -> bool:
    if (lvlm.family, method) in UNSUPPORTED:
        return False
    families = next(m["families"] for m in halluc.methods() if m["name"] == method)
    return families == "all" or lvlm.family in families


def run_case(lvlm, method: str, params: dict) -> dict[str, torch.Tensor]:
    imgs, out = images(), {}
    modes = set.intersection(*(set(m.modes) for m in make_methods(method, {})))  # an alias: its stack's
    if method not in DECODING_ONLY_TOKENS:
        greedy = halluc.generate(lvlm, imgs, PROMPTS, method, max_new_tokens=STEPS, return_scores=True, **params)
        out["greedy"] = greedy.scores
        if "sample" in modes:
            sampled = halluc.generate(lvlm, imgs, PROMPTS, method, max_new_tokens=STEPS, do_sample=True, seed=3,
                                      return_scores=True, **params)
            out["sample_tokens"] = _tokens(sampled.tokens)
    if "beam" in modes:
        beams = 2 if method not in DECODING_ONLY_TOKENS else 1
        out["beam_text"] = halluc.generate(lvlm, imgs, PROMPTS, method, max_new_tokens=STEPS, num_beams=beams,
                                           return_scores=False, **params)
    return out


def _tokens(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows])


def params_for(lvlm, method: str) -> dict:
    return {**CASES[method], **FAMILY_PARAMS.get((lvlm.family, method), {})}


def record(models=MODELS, methods=None) -> dict:
    torch.set_num_threads(2)
    golden = {}
    for name in models:
        lvlm = halluc.load(name, device="cpu")
        for method in CASES:
            if (methods is None or method in methods) and supported(lvlm, method):
                golden[f"{name}/{method}"] = run_case(lvlm, method, params_for(lvlm, method))
    return golden


def append(methods: list[str]) -> dict:
    """The recorded cases plus those of `methods` on every model; a method already recorded is refused."""
    golden = torch.load(GOLDEN)
    recorded = sorted({case.split("/")[1] for case in golden} & set(methods))
    if recorded:
        raise SystemExit(f"already recorded: {', '.join(recorded)} (re-record everything deliberately instead)")
    return {**golden, **record(MODELS, set(methods))}


if __name__ == "__main__":
    # `python -m tests.golden.record_scores [METHOD ...]`: re-record only those methods' cases (a deliberate
    # fidelity fix, named in the commit); `--append METHOD ...`: record new methods, the rest untouched;
    # no argument: every case
    args = sys.argv[1:]
    if args[:1] == ["--append"]:
        chosen, data = args[1:], append(args[1:])
    else:
        chosen = args or list(CASES)
        data = torch.load(GOLDEN) if GOLDEN.exists() and args else {}
        data.update(record(MODELS, set(chosen)))
    torch.save(data, GOLDEN)
    print(f"recorded {', '.join(chosen)}; {len(data)} cases in {GOLDEN}")
