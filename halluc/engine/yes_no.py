"""Yes/no evidence at the answer step: how much a model leaned to "Yes" or "No", recorded without
changing anything it decodes.

`YesNoTokens.of(tokenizer)` finds a family's answer tokens: "Yes", "yes", "YES" (and "No", ...), each
with and without a leading space, as the tokenizer writes them (LLaVA-1.5: "▁Yes"; Qwen: "Yes" and
"ĠYes"; toy-llava: "Yes"). A word that is several tokens counts by its first token (the tiny byte-level
models answer "Y"/"N"); an id found for both words (a bare space) and the unknown token are dropped.
The first variant is the one the model writes at the start of its answer ("Yes" encoded alone).

`EvidenceRecorder` keeps, at the first generated step, each sample's log-probabilities of every variant
from two distributions:

    pre      the scores the method decoded from, before any adaptive plausibility cutoff (the combined
             views of a contrastive method; the processed logits otherwise)
    decoded  the distribution the token was taken from: after the cutoff (so an answer word the cutoff
             dropped is −inf), before temperature / top-p (identical under greedy decoding)

Both are log_softmax in float64 of the scores as given. Beam search records the first beam of each
sample (at the first step every beam of a sample is the same row). The margin
log Σ p(yes variants) − log Σ p(no variants) is what the threshold-free metrics rank samples by.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from halluc.errors import HallucError

WORDS = ("Yes", "No")
CASES = (str.capitalize, str.lower, str.upper)
SPACE_MARKS = ("▁", "Ġ")  # SentencePiece and byte-level BPE spellings of a leading space


@dataclass(frozen=True)
class YesNoTokens:
    """The answer tokens of one tokenizer: (token text, id) per variant, the answer's own spelling first."""

    yes: tuple[tuple[str, int], ...]
    no: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, tokenizer) -> YesNoTokens | None:
        """The variants of "Yes" and "No" in this tokenizer, or None when either word has none."""
        found = [_variants(tokenizer, word) for word in WORDS]
        shared = set(found[0]) & set(found[1])
        unknown = {getattr(tokenizer, "unk_token_id", None)}
        yes, no = ([(tokenizer.convert_ids_to_tokens(i), i) for i in ids if i not in shared | unknown]
                   for ids in found)
        return cls(tuple(yes), tuple(no)) if yes and no else None

    @classmethod
    def required(cls, tokenizer, owner: str) -> YesNoTokens:
        """The tokenizer's yes/no tokens, or one line saying `owner` needs them."""
        tokens = cls.of(tokenizer)
        if tokens is None:
            raise HallucError(f"{owner}: the tokenizer has no token for 'Yes' or 'No'")
        return tokens

    @property
    def yes_ids(self) -> list[int]:
        return [i for _, i in self.yes]

    @property
    def no_ids(self) -> list[int]:
        return [i for _, i in self.no]

    def names(self) -> dict[str, list[str]]:
        return {"yes": [t for t, _ in self.yes], "no": [t for t, _ in self.no]}


def _variants(tokenizer, word: str) -> list[int]:
    """Ids of `word`'s spellings, in order of preference, each once."""
    ids: list[int] = []
    vocab = tokenizer.get_vocab()
    for case in CASES:
        spelled = case(word)
        for text in (spelled, " " + spelled):
            encoded = tokenizer.encode(text, add_special_tokens=False)
            if encoded:
                ids.append(encoded[0])
        ids += [vocab[mark + spelled] for mark in SPACE_MARKS if mark + spelled in vocab]
    return list(dict.fromkeys(ids))


class EvidenceRecorder:
    """Keeps the first step's answer-word log-probs of `rows` samples (`stride`: rows per sample in the
    scores it is given, the beam count under beam search). As the last logits processor it returns the
    scores untouched; a contrastive combiner calls `record` with its own two distributions instead."""

    def __init__(self, tokens: YesNoTokens, rows: int, stride: int = 1):
        self.tokens, self.rows, self.stride = tokens, rows, stride
        self.pre: torch.Tensor | None = None      # (rows, yes + no variants) float64
        self.decoded: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.record(scores, scores)
        return scores

    def record(self, pre: torch.Tensor, decoded: torch.Tensor) -> None:
        if self.pre is not None:
            return
        self.pre, self.decoded = self._answer_log_probs(pre), self._answer_log_probs(decoded)

    def _answer_log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        picked = scores[:: self.stride][: self.rows].double()  # (rows, V)
        ids = torch.tensor(self.tokens.yes_ids + self.tokens.no_ids, device=scores.device)
        return picked.log_softmax(-1)[:, ids].cpu()

    def evidence(self) -> list[dict | None]:
        """One record per sample: {"tokens", "pre", "decoded"}; None when no step was recorded."""
        if self.pre is None or self.decoded is None:  # recorded together
            return [None] * self.rows
        split = len(self.tokens.yes)
        names = self.tokens.names()
        return [{"tokens": names,
                 "pre": {"yes": _finite(pre[:split]), "no": _finite(pre[split:])},
                 "decoded": {"yes": _finite(dec[:split]), "no": _finite(dec[split:])}}
                for pre, dec in zip(self.pre.tolist(), self.decoded.tolist())]


def _finite(values: Sequence[float]) -> list[float | None]:
    """JSON has no −inf: a word the cutoff removed is written as null."""
    return [v if math.isfinite(v) else None for v in values]


def margin(evidence: dict | None, which: str = "pre") -> float | None:
    """log Σ p(yes variants) − log Σ p(no variants) of a recorded sample (±inf when one side was cut; None
    without evidence or when both were cut)."""
    if not isinstance(evidence, dict) or not isinstance(evidence.get(which), dict):
        return None
    yes, no = (_log_sum_exp(evidence[which].get(side) or []) for side in ("yes", "no"))
    if yes == -math.inf and no == -math.inf:
        return None
    return yes - no


def _log_sum_exp(values: Sequence[float | None]) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))
