"""HALC's search (Chen et al., ICML 2024; official `halc_dola_beam_search`): DoLa-greedy beams that, at every
finished object word, re-decode the word's first token from fields of view around the object and keep the
candidate continuations whose text best matches the image. Used through `model.generate(custom_generate=...)`
for one sample; HF's prefill, this loop after it.

Per step, for each of the B beams (each a row with its own cache, as the code's per-beam calls):
  1. its next token x_b from the logits of its last forward (the method's DoLa hook rewrote them);
  2. when x_b starts a new word and the word just finished is checked (`focal.checked`): the detector's box
     for it, the fields of view around the box, one batched forward of the prompt with each view as image
     plus the beam's tokens before the word (teacher forcing, no cache) -> the views' final logits at the
     word's first position -> `focal.pair_contrast` -> the argmax of each of the k candidates;
  3. at a step where some beam was checked, the B·k candidate texts (a checked beam: its tokens before the
     word + a candidate; another beam: its tokens + x_b, k times) are scored against the image and the B
     best distinct ones become the beams (`focal.distinct_best`); otherwise every beam appends x_b;
  4. a beam whose word was replaced continues from the word's start (its cache cropped there); a word that
     was not detected and came back unchanged is deleted from the answer after 8 generated tokens.
The answer is beam 0's, as the code returns.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.generation.utils import GenerateBeamDecoderOnlyOutput

from halluc.engine import focal
from halluc.engine.decoding import Decoding
from halluc.engine.opera_search import Rows
from halluc.errors import HallucError
from halluc.modeling import hf_compat

DELETE_AFTER = 8  # the code deletes an undetected, unchanged word only once this many tokens exist
WORD_MARKS = ("▁", "Ġ", ".")  # SentencePiece / byte-level BPE word starts, and the code's "."


@dataclass(frozen=True)
class HalcSettings:
    beams: int = 3
    candidates: int = 4
    expand_ratio: float = 0.6
    windows: int = 4
    weight: float = 0.05
    skip_rate: float = 0.3
    seed: int = 0


@dataclass
class _Beam:
    tokens: list[int]  # generated so far
    start: int  # where its current word starts (index into tokens)
    rows: Rows  # its cache (one row)
    logits: torch.Tensor  # (1, V) the next-token logits after `tokens`
    deleted: set[int] = field(default_factory=set)  # positions dropped from the answer
    done: bool = False
    redecoded: int = -1  # start of the word last replaced from the fields of view: it is not checked again


def forward(rows: Rows, sequence: torch.Tensor, new: int = 1) -> torch.Tensor:
    """Feed the last `new` tokens of `sequence` (1, L) to a beam's cache; its next-token logits (1, V) fp32."""
    model = rows.model
    rows.kwargs = hf_compat.update_model_kwargs(model, {}, rows.kwargs, num_new_tokens=new)
    inputs = model.prepare_inputs_for_generation(sequence, next_sequence_length=new, **rows.kwargs)
    return model(**inputs, return_dict=True).logits[:, -1].float()


class HalcSearch:
    """`custom_generate` callable (a `halluc.engine.search.Search`) for one sample.

    view_logits(crops, prefix) -> (F, V): the final logits of the prompt with each crop as image and `prefix`
    generated tokens after it; detect(word) -> (boxes, detected); score(texts) -> (n,) match with the image."""

    one_sample = True

    def __init__(self, settings: HalcSettings, tokenizer, image, nouns: frozenset[str], view_logits: Callable,
                 detect: Callable, score: Callable):
        self.s, self.tokenizer, self.image, self.nouns = settings, tokenizer, image, nouns
        self.view_logits, self.detect, self.score = view_logits, detect, score
        self.rng = random.Random(settings.seed)  # the word-skipping draws (the code: unseeded `random`)

    def decoding(self, requested: Decoding) -> Decoding:
        if requested.do_sample:
            raise HallucError("halc is a beam search: do_sample is not supported")
        if requested.num_beams not in (1, self.s.beams):
            raise HallucError(f"halc searches with its own beams={self.s.beams}; set halc's 'beams' parameter "
                              f"instead of num_beams={requested.num_beams}")
        return dataclasses.replace(requested, num_beams=1)  # one prefill row; the beams are copied from it

    def __call__(self, model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                 **model_kwargs):
        if input_ids.shape[0] != 1:
            raise HallucError(f"HALC searches one sample at a time; got {input_ids.shape[0]} rows")
        if generation_config.output_scores:
            raise HallucError("HALC is a beam search: per-step scores (return_scores) are not available")
        prompt = input_ids.shape[1]
        out = hf_compat.prefill(model, input_ids, generation_config, model_kwargs)
        first = Rows(model, hf_compat.update_model_kwargs(model, out, model_kwargs), None, prompt)
        logits = out.logits[:, -1].float()
        one = torch.zeros(1, dtype=torch.long, device=input_ids.device)
        beams = [_Beam([], 0, first.subset(one), logits) for _ in range(self.s.beams)]
        eos, _ = hf_compat.eos_and_pad(generation_config)
        stops = set() if eos is None else set(eos.flatten().tolist())
        budget = generation_config.max_length - prompt
        ids = lambda tokens: torch.cat([input_ids, input_ids.new_tensor([tokens])], -1)  # noqa: E731
        while not all(b.done for b in beams):
            beams = self._step(beams, ids, logits_processor, stops, budget)
        best = beams[0]
        kept = [t for i, t in enumerate(best.tokens) if i not in best.deleted]
        return GenerateBeamDecoderOnlyOutput(sequences=ids(kept))  # type: ignore[arg-type]  # LongTensor: a stub alias

    def _step(self, beams: list[_Beam], ids, processors, stops: set, budget: int) -> list[_Beam]:
        k = self.s.candidates
        options: list[tuple[_Beam, int | None, Any, bool]] = []  # (beam, next token x_b, candidates or None, detected)
        for beam in beams:
            if beam.done:
                options.append((beam, None, None, True))
                continue
            x = int(processors(ids(beam.tokens), beam.logits.clone()).argmax(-1))
            word = self._finished_word(beam, x, stops)
            tokens, detected = None, True
            # a replaced word is final: checking it again could swap two words forever and never finish
            if word is not None and beam.start != beam.redecoded \
                    and focal.checked(word, self.nouns, self.s.skip_rate, self.rng):
                tokens, detected = self._redecode(beam, word, ids, processors)
            options.append((beam, x, tokens, detected))
        if all(tokens is None for _, _, tokens, _ in options):
            return [beam if beam.done or nxt is None else self._advance(beam, nxt, ids, stops, budget)
                    for beam, nxt, _, _ in options]
        candidates: list[tuple[int, Any]] = []  # (option index, replacement token or None)
        for i, (_, _, tokens, _) in enumerate(options):
            candidates += [(i, t) for t in tokens] if tokens is not None else [(i, None)] * k
        texts = [self._text(options[i][0], t, options[i][1]) for i, t in candidates]
        chosen = focal.distinct_best(texts, self.score(texts).float().cpu(), len(beams))
        out = []
        for c in chosen:
            i, token = candidates[c]
            beam, nxt, _, detected = options[i]
            out.append(self._follow(beam, nxt, token, detected, ids, stops, budget))
        return out

    def _finished_word(self, beam: _Beam, x: int, stops: set) -> str | None:
        """The cleaned word x closes (x starts a new word or ends the answer), or None."""
        if not beam.tokens or not (x in stops or self._starts_word(beam.tokens, x)):
            return None
        text = self.tokenizer.decode(beam.tokens[beam.start:], skip_special_tokens=True).strip()
        return focal.entity(text.split(" ")[-1]) if text else None

    def _starts_word(self, tokens: list[int], x: int) -> bool:
        """x opens a new word: its piece has a word mark, or the text grows by a space before it (word-level
        vocabularies, whose pieces carry no mark)."""
        piece = self.tokenizer.convert_ids_to_tokens(x) or ""
        if any(m in piece for m in WORD_MARKS):
            return True
        before = self.tokenizer.decode(tokens, skip_special_tokens=True)
        after = self.tokenizer.decode(tokens + [x], skip_special_tokens=True)
        return after.startswith(before) and after[len(before):len(before) + 1].isspace()

    def _redecode(self, beam: _Beam, word: str, ids, processors):
        """k candidate first tokens of the finished word from the fields of view, and whether it was detected."""
        boxes, detected = self.detect(word)
        if len(boxes) > focal.MOST_BOXES:  # the code leaves the word as it is ("invalid")
            return [beam.tokens[beam.start]] * self.s.candidates, True
        box = min(boxes, key=focal.area) if boxes else focal.UNDETECTED
        views, _ = focal.fields_of_view(box, self.s.expand_ratio, self.s.windows)
        prefix = beam.tokens[:beam.start]
        logits = self.view_logits([focal.crop(self.image, v) for v in views], prefix)  # (F, V)
        contrasted = processors(ids(prefix).expand(self.s.candidates, -1),
                                focal.pair_contrast(logits, self.s.candidates, self.s.weight))
        return contrasted.argmax(-1).tolist(), detected

    def _text(self, beam: _Beam, token: int | None, x: int | None) -> str:
        tokens = beam.tokens if x is None else beam.tokens[:beam.start] + [token] if token is not None \
            else beam.tokens + [x]
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _follow(self, beam: _Beam, x, token, detected: bool, ids, stops: set, budget: int) -> _Beam:
        """A new beam from a chosen candidate (a fresh copy of its parent's cache)."""
        one = torch.zeros(1, dtype=torch.long)
        copy = dataclasses.replace(beam, tokens=list(beam.tokens), rows=beam.rows.subset(one.to(beam.logits.device)),
                                   deleted=set(beam.deleted))
        if beam.done:
            return copy
        if token is None or token == beam.tokens[beam.start]:  # the word stays
            if token is not None and not detected and len(beam.tokens) >= DELETE_AFTER:
                copy.deleted |= set(range(beam.start, len(beam.tokens)))
            return self._advance(copy, x, ids, stops, budget)
        copy.rows.truncate(copy.rows.cache.get_seq_length() - (len(beam.tokens) - beam.start))
        copy.tokens, copy.redecoded = beam.tokens[:beam.start], beam.start
        return self._advance(copy, token, ids, stops, budget, new_word=True)

    def _advance(self, beam: _Beam, x: int, ids, stops: set, budget: int, new_word: bool = False) -> _Beam:
        if new_word or not beam.tokens or self._starts_word(beam.tokens, x):
            beam.start = len(beam.tokens)
        beam.tokens.append(x)
        beam.done = x in stops or len(beam.tokens) >= budget
        if not beam.done:
            beam.logits = forward(beam.rows, ids(beam.tokens))
        return beam
