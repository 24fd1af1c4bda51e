"""HALC (Chen et al., ICML 2024, arXiv 2403.00425): adaptive focal-contrast decoding.

    at a finished object word: z_k = logits of its first token with the k-th field of view as image;
    candidates z_j − w·z_i and z_i − w·z_j for the most divergent FOV pairs (i, j); keep the B candidate texts
    that best match the image; between words, DoLa (s = log p_N − log p_{j*}) decodes each beam.

The search loop is `halluc.engine.halc_search.HalcSearch` (it replaces HF's search, one sample at a time);
the FOVs, pair contrast and beam choice are `halluc.engine.focal`; the detector and matcher
`halluc.engine.grounding`; the DoLa base decoder is `halluc.interventions.dola`'s hook.
Cost: per step B cached forwards (the code's per-beam calls); per checked word one forward of the prompt
+ answer so far for each of the 4 views (no cache), one detector call, and one matcher call of B·k texts.
Families: those whose image tokens lie on a 2-D grid with the attention detector (not InstructBLIP);
with `detector="dino"` every family (matcher "blip" or "lvlm-likelihood"; "lvlm-attention" reads the grid too).

Paper / code discrepancies and our choices (spec §1):
  - detector: Grounding DINO Swin-T OGC (threshold 0.45 as the script; the README says 0.4) and matcher
    BLIP (`score_type` BLIP in the script; the paper/README say CLIP) are used when their weights are on
    disk; they are never downloaded. `auto` falls back (with a warning) to the LVLM itself. The detector: the
    word read as the prompt, its attention over the image grid at the middle layer, the largest connected
    set of cells above mean + σ as the box (none: "not detected"). The matcher: each candidate text's mean
    per-token log-probability as the LVLM's answer with the image (`lvlm-likelihood`, the spec's fallback).
    `matcher="lvlm-attention"` (a text's attention mass on the image) is kept as a choice, not the default:
    it measures looking, not matching: on the toy world's 150 captions CHAIR_I 45 against vanilla's 11 (ours: 17).
  - the part-of-speech test (spaCy NOUN/PROPN) becomes a list of COCO object words (`focal.NOUNS`), with
    the code's exempt and always-checked lists. The code skips a word with probability 0.3 from the
    unseeded global `random`; ours draws from `random.Random(skip_seed)`, one draw per finished word in
    the order the beams reach them, so a run is reproducible (skip_rate 0 checks every object word).
  - word boundaries: a token containing "▁" (SentencePiece), "Ġ" (byte-level BPE) or ".", one the decoded
    text gains a space before (word-level vocabularies), or EOS (the code: "▁"/"." in a LLaMA vocabulary
    file, so LLaMA only).
  - a word replaced from the fields of view is not checked again (it could otherwise swap with another word
    at the same position forever and the answer would never grow);
  - at steps with no checked word the beams just append their DoLa token (the code also scores the
    unchanged texts then; the distinct-best choice keeps them when they are distinct). The code's LLaVA
    repetition stop, its random choice when nothing was grounded, and a stop on HF's other criteria are
    not reproduced: a beam stops at EOS or max_new_tokens.
  - a deleted word (not detected, unchanged, ≥ 8 tokens generated) leaves the answer but stays in the
    beam's context (the code writes <unk> there and strips it at the end).
  - DoLa inside HALC uses the code's greedy DoLa rule (relative top 0.1, hidden states 0, 2, ..., N−2).
  - the answer is beam 0's, as in the code (not the best-scoring beam).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from halluc.engine import grounding, matchers
from halluc.engine.focal import NOUNS
from halluc.engine.halc_search import HalcSearch, HalcSettings
from halluc.engine.matchers import MatcherUnavailable
from halluc.errors import HallucError
from halluc.interventions.aux import aux_pass
from halluc.interventions.base import Method, param
from halluc.interventions.dola import DoLa
from halluc.interventions.registry import register
from halluc.limits import MAX_BEAMS, MAX_CANDIDATES


@register
@dataclass(frozen=True)
class HALC(Method):
    """Adaptive focal-contrast decoding on a DoLa base decoder.

    Args:
        beams: B (the script's -b 3); candidates: k per checked beam (4, even).
        expand_ratio: r of the fields of view (0.6); windows: how many (4); contrast_weight: w (0.05).
        skip_rate: chance a checked word is skipped (the code's 0.3; 0 = none); skip_seed: its seed.
        detector / matcher: "auto" (the official model if on disk, else lvlm-attention / lvlm-likelihood), the
            official one ("dino" / "blip", refused when its weights are not local), or an LVLM fallback.
        box_threshold: Grounding DINO's box threshold (0.45); layer: relative depth the attention fallbacks read.
        dola_layers, relative_top, norm: the DoLa base decoder (see `dola`).
    """

    name = "halc"
    kind = "decoding"
    replaces_search = True
    modes = ("greedy", "beam")  # greedy = its search with its own beams; never sampling
    needs = frozenset({"grid"})  # the attention fallbacks read the image grid
    paper = "Chen et al., ICML 2024 (arXiv 2403.00425)"
    formula = "at object words z_j − w·z_i over the most divergent FOV pairs; B best image-matching texts; DoLa between"
    cost = ("per step B cached forwards; per checked word 4 uncached forwards (prompt + answer, one per view), a "
            "detector call and a matcher call on B·k texts")

    beams: int = param(3, low=1, high=MAX_BEAMS, doc="B: beam width (script: 3)")
    candidates: int = param(4, low=2, high=MAX_CANDIDATES, doc="k: candidates per checked beam (even)")
    expand_ratio: float = param(0.6, low=0.0, high=4.0, open_low=True, doc="r: FOV expansion ratio")
    windows: int = param(4, low=2, high=8, doc="number of fields of view (the code's context_window)")
    contrast_weight: float = param(0.05, low=0.0, doc="w in z_j − w·z_i")
    skip_rate: float = param(0.3, low=0.0, high=1.0, doc="chance a checked word is skipped (code: 0.3)")
    skip_seed: int = param(0, low=0, doc="seed of the word-skipping draws")
    detector: str = param("auto", choices=("auto", "dino", "lvlm-attention"), doc="object detector")
    matcher: str = param("auto", choices=("auto", "blip", "lvlm-likelihood", "lvlm-attention"),
                         doc="text-image matcher")
    detector_model: str = param(grounding.GROUNDING_DINO, loads=True, doc="Grounding DINO checkpoint (local or dir)")
    matcher_model: str = param(grounding.BLIP_SCORER, loads=True, doc="BLIP checkpoint (local cache or directory)")
    box_threshold: float = param(0.45, low=0.0, high=1.0, doc="Grounding DINO box threshold (script 0.45)")
    layer: float = param(0.5, low=0.0, high=1.0, doc="relative depth the attention fallbacks read")
    dola_layers: tuple = param((), doc="DoLa premature candidates; () = 0, 2, ..., N−2")
    relative_top: float = param(0.1, low=0.0, high=1.0, doc="DoLa relative top")
    norm: bool = param(False, doc="final norm on DoLa's early exits (code: off)")

    example_params = {"beams": 2, "skip_rate": 0.0, "detector": "lvlm-attention", "matcher": "lvlm-attention"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.candidates % 2:
            raise HallucError(f"halc: parameter 'candidates' must be even (pairs give two each); got {self.candidates}")
        pairs = self.windows * (self.windows - 1) // 2  # distinct view pairs (i < j), two candidates each
        if self.candidates > 2 * pairs:
            raise HallucError(f"halc: parameter 'candidates' must be at most {2 * pairs} with windows={self.windows} "
                              f"(two per pair of views); got {self.candidates}")
        object.__setattr__(self, "dola_layers", self.base().layers)

    def base(self) -> DoLa:
        return DoLa(layers=self.dola_layers, relative_top=self.relative_top, norm=self.norm)

    def requires(self) -> frozenset[str]:  # only the attention fallbacks read the image grid
        return self.needs if "lvlm-attention" in (self.detector, self.matcher) or self.detector == "auto" \
            else frozenset()

    def hooks(self, session):
        return self.base().hooks(session)

    def resolve(self, which: str, load, device: str) -> str:
        """"auto" -> the official model when it loads from disk, else the LVLM fallback (with a warning)."""
        choice, fallback = getattr(self, which), "lvlm-attention" if which == "detector" else "lvlm-likelihood"
        if choice.startswith("lvlm-"):
            return choice
        try:
            load(getattr(self, f"{which}_model"), device)
        except MatcherUnavailable as err:
            if choice != "auto":
                raise
            warnings.warn(f"{err}; HALC falls back to {which}='{fallback}'", stacklevel=2)
            return fallback
        return "dino" if which == "detector" else "blip"

    def search(self, session) -> HalcSearch:
        lvlm, image, prompt, device = session.lvlm, session.images[0], session.prompts[0], str(session.lvlm.device)
        detector = self.resolve("detector", matchers.load_grounding_dino, device)
        matcher = self.resolve("matcher", matchers.load_blip_scorer, device)
        layer = round(self.layer * (session.adapter.num_layers(session.model) - 1))

        def detect(word: str):
            with aux_pass(session, self.name):
                boxes = grounding.dino_boxes(image, word, self.detector_model, device, self.box_threshold) \
                    if detector == "dino" else grounding.attention_boxes(lvlm, image, word, layer)
            return boxes, bool(boxes)

        def score(texts: list[str]) -> torch.Tensor:
            if matcher == "blip":
                return grounding.blip_scores(image, texts, self.matcher_model, device)
            with aux_pass(session, self.name):
                return grounding.likelihood_scores(lvlm, image, prompt, texts) if matcher == "lvlm-likelihood" \
                    else grounding.attention_scores(lvlm, image, texts, layer)

        def view_logits(crops, prefix: list[int]) -> torch.Tensor:
            return self.view_logits(session, crops, prompt, prefix)

        settings = HalcSettings(beams=self.beams, candidates=self.candidates, expand_ratio=self.expand_ratio,
                                windows=self.windows, weight=self.contrast_weight, skip_rate=self.skip_rate,
                                seed=self.skip_seed)
        return HalcSearch(settings, session.processor.tokenizer, image, frozenset(NOUNS), view_logits, detect, score)

    def view_logits(self, session, crops, prompt: str, prefix: list[int]) -> torch.Tensor:
        """(F, V) final logits of the prompt with each crop as its image, then `prefix` (teacher forcing), one
        forward (one per view where their shapes differ), with every method's edits off."""
        with aux_pass(session, self.name):
            return torch.cat([session.model(**r, use_cache=False).logits[:, -1].float()
                              for r in grounding.view_batches(session.lvlm, crops, prompt, prefix)])
