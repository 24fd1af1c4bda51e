"""OPERA's search (Huang et al., CVPR 2024): beam search over each beam's top candidates, penalised for
over-trust in a summary token, with retrospection-allocation (rollback). Used through
`model.generate(custom_generate=OperaSearch(...))`: HF prepares the inputs, the beams and the cache,
this loop replaces `_beam_search` and reuses its bookkeeping helpers (top 2K, EOS, length penalty).

One step, for K beams with N candidates each (the top-N tokens of the beam's logits):
  1. probe: the cache is repeated N times (`batch_repeat_interleave`: every candidate gets its own
     copy) and the K·N candidate tokens run as one batch. This gives each candidate's attention row
     in the OPERA layer (the kernel's `return_attention_row`; max over heads, row-normalised) and the
     logits of the step after, so the chosen (beam, candidate) rows are kept (`batch_select_indices`)
     and no second forward is needed;
  2. over-trust: W = the beam's response-by-response attention block plus the candidate's row,
     φ_j = 1e−7·∏_{i≥j} σ·W[i, j], penalty max_j φ_j at location j*. Kept as per-beam running column
     sums of log(σ·W) in float64, so a step costs O(n) and nothing under/overflows; the penalty is
     exp(min(log φ, 700)). The first 10 response tokens get −(the candidate's mass on image tokens);
  3. scores: log-softmax over the candidates of ℓ_c − λ·penalty (others −inf), the logits
     processors, then HF's beam bookkeeping picks K (beam, candidate) pairs;
  4. rollback: each beam carries the history of its j* (mode over its candidates), along its
     ancestry. When for every beam the beams' mode location s (≥ 10) occurs more than r times, the
     search returns to the state before token s+1 (at most N times per position, then s), rebuilds
     those beams' cache from the prompt (crop + one forward of their response), forbids the
     (beam, token) pairs chosen there before, and chooses from the full vocabulary.

Compared with the official `opera_beam_search` (see `halluc.interventions.opera` for the full list):
the main forward and the N candidate forwards are one batched forward; rollback recomputes only the
response (the prompt's cache is kept); the rollback decision is per sample (the caller runs one sample
per search) and per beam ancestry instead of per beam slot; numerics are float64/log-space.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.generation.utils import GenerateBeamDecoderOnlyOutput

from halluc.engine.decoding import Decoding
from halluc.errors import HallucError
from halluc.modeling import hf_compat
from halluc.modeling.cache import cache_of

FIRST_TOKENS = 10  # response tokens that get the image-attention bonus; no rollback to a location before this
LOG_FLOOR = math.log(1e-7)  # OPERA's 1e-7 factor on the column products
MAX_LOG_PENALTY = 700.0  # exp(700) is still finite in float64


@dataclass(frozen=True)
class OperaSettings:
    beams: int = 5
    candidates: int = 5
    scale: float = 50.0
    threshold: int = 15
    weight: float = 1.0
    window: int = 512
    normalise: str = "whole"  # finished beams: "whole" sequence length (the official code) or "generated"


# ---- the penalty and the rollback rule (pure, tested on hand-made rows) ------------------------
def normalise_rows(rows: torch.Tensor) -> torch.Tensor:
    """(R, H, T) attention rows -> (R, T): max over heads, each row divided by its sum."""
    top = rows.float().amax(1)
    return top / top.sum(-1, keepdim=True)


def over_trust(columns: torch.Tensor, rows: torch.Tensor, scale: float):
    """columns (K, n): Σ_{i≥j} log(σ·W[i, j]) over each beam's n response rows;
    rows (K, C, n+1): each candidate's normalised attention to the response tokens, itself last.
    Returns log φ (K, C) with φ = 1e−7·max_j ∏_{i≥j} σ·W[i, j], its location j* (K, C), and the
    candidates' new columns (K, C, n+1)."""
    new = F.pad(columns, (0, 1))[:, None, :] + (scale * rows.double()).log()
    log_phi, location = (new + LOG_FLOOR).max(-1)
    return log_phi, location, new


def candidate_scores(logits: torch.Tensor, candidates: torch.Tensor, penalty: torch.Tensor,
                     weight: float) -> torch.Tensor:
    """(K, V) log-probs over each beam's candidates (K, C) of ℓ_c − weight·penalty_c; −inf elsewhere."""
    scores = logits.gather(-1, candidates).double() - weight * penalty.double()
    out = torch.full_like(logits, -math.inf, dtype=torch.float32)
    return out.scatter(-1, candidates, scores.log_softmax(-1).float())


@dataclass
class _Saved:
    beams: dict  # `Beams` state before choosing token n
    columns: torch.Tensor  # (K, n)
    locations: torch.Tensor  # (K, n+1)


class Retrospection:
    """OPERA's rollback rule and what it needs to return: one saved state per response position."""

    def __init__(self, settings: OperaSettings):
        self.settings = settings
        self.visits: Counter = Counter()  # rollbacks to each position
        self.saved: dict[int, _Saved] = {}
        self.chosen: dict[int, torch.Tensor] = {}  # position -> flat (beam * V + token) pairs chosen there
        self.rejected: dict[int, torch.Tensor] = {}

    def save(self, n: int, state: _Saved) -> None:
        """Keep the state before choosing token n (for `window` steps)."""
        self.saved[n] = state
        self.saved.pop(n - self.settings.window - 1, None)

    def target(self, locations: torch.Tensor, n: int) -> int | None:
        """The position to return to, or None. locations (K, steps): each beam's j* history, last = now."""
        s = self.settings
        loc = int(locations[:, -1].mode().values)
        if loc < FIRST_TOKENS or not bool(((locations == loc).sum(-1) > s.threshold).all()):
            return None
        pos = loc + 1
        if self.visits[pos] >= s.candidates:
            pos -= 1
            if self.visits[pos] >= s.candidates:
                return None
        self.visits[pos] += 1
        pos = max(pos, n - s.window)
        return pos if pos < n and pos in self.saved else None

    def rewind(self, pos: int) -> _Saved:
        """Forget everything after `pos`, forbid the pairs chosen at `pos` so far, and return its state."""
        earlier = [self.rejected[pos]] if pos in self.rejected else []
        self.rejected[pos] = torch.cat([*earlier, self.chosen[pos]])
        self.saved = {k: v for k, v in self.saved.items() if k <= pos}
        self.chosen = {k: v for k, v in self.chosen.items() if k < pos}  # position pos is chosen again
        self.rejected = {k: v for k, v in self.rejected.items() if k <= pos}
        return self.saved[pos]


# ---- the running rows and HF's beam bookkeeping -------------------------------------------------
class Rows:
    """The running rows' KV cache and per-row model kwargs, which always cover exactly the cached positions."""

    SEQUENCE_KEYS = ("attention_mask", "position_ids", "mm_token_type_ids", "token_type_ids")
    PREFILL_ONLY = ("inputs_embeds", "mm_encoder_outputs")

    def __init__(self, model, kwargs: dict, edit, length: int):
        self.model, self.edit = model, edit
        self.kwargs = {k: v for k, v in kwargs.items() if k not in self.PREFILL_ONLY}
        self.cache = cache_of(self.kwargs)
        self._each(lambda v, dim: v[..., :length])

    def _each(self, fn) -> None:
        for key in self.SEQUENCE_KEYS:
            if (value := self.kwargs.get(key)) is not None:
                self.kwargs[key] = fn(value, 1 if key == "position_ids" and value.dim() == 3 else 0)

    def repeat(self, n: int) -> None:
        """Every row becomes n consecutive rows with their own copy of the cache."""
        self.cache.batch_repeat_interleave(n)
        self._each(lambda v, dim: v.repeat_interleave(n, dim=dim))

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self._each(lambda v, dim: v.index_select(dim, rows.to(v.device)))

    def truncate(self, length: int) -> None:
        self.cache.crop(length - self.cache.get_seq_length())
        self._each(lambda v, dim: v[..., :length])

    def forward(self, sequences: torch.Tensor, new: int = 1):
        """Feed the last `new` tokens of `sequences` (R, L). Returns the next-token logits (R, V) in fp32
        and, for one new token, the OPERA layer's attention row (R, H, L)."""
        model, record = self.model, self.edit.record
        self.kwargs = hf_compat.update_model_kwargs(model, {}, self.kwargs, num_new_tokens=new)
        inputs = model.prepare_inputs_for_generation(sequences, next_sequence_length=new, **self.kwargs)
        calls = record.calls
        logits = model(**inputs, return_dict=True).logits[:, -1].float()
        if new > 1:
            return logits, None
        if record.calls == calls or record.attention_row is None:
            raise RuntimeError("OPERA got no attention row: the 'halluc' attention backend did not run its layer")
        return logits, record.attention_row.to(logits.device)  # the OPERA layer may sit on another device


def finished_scale(top_tokens: torch.Tensor, eos: torch.Tensor | None, cur: int, prompt: int, counted,
                   length_penalty: float) -> torch.Tensor:
    """Factors that turn transformers 5's finished-beam score into the official OPERA one (transformers 4.29).

    5.x divides a finished hypothesis's log-prob by (generated tokens, the last one included) ** lp.
    4.29's `BeamHypotheses.add` divides by the length of the hypothesis as its `input_ids` held it: the
    prompt as the official code passed it (`counted` tokens, see `halluc.interventions.opera`), plus the
    generated tokens; a beam that ends on EOS is stored without the EOS token, one cut at max_length with
    its last token. `prompt` is the width of our own prompt (where generation starts); `counted` an int
    or a tensor that broadcasts against top_tokens. Returns factors of top_tokens' shape.
    """
    ended = torch.isin(top_tokens, eos.to(top_tokens.device)) if eos is not None else torch.zeros_like(top_tokens,
                                                                                                         dtype=torch.bool)
    generated = cur - prompt  # before the new token
    whole = torch.where(ended, 0, 1) + generated + torch.as_tensor(counted, device=top_tokens.device)
    return (((generated + 1) / whole.double()) ** length_penalty).to(torch.float32)


class Beams:
    """HF's static-shape beam state for one sample, advanced with `GenerationMixin`'s beam helpers.

    `normalise="whole"` scores finished beams as the official OPERA code did (by the length of the whole
    hypothesis, its prompt counted as `counted` tokens: see `finished_scale`), and stops early by 4.29's
    heuristic; "generated" as transformers 5 does. It can change which finished beam wins (tested)."""

    def __init__(self, model, input_ids: torch.Tensor, config, stopping_criteria, normalise: str = "whole",
                 counted: int | None = None):
        self.model, self.config, self.stopping, self.normalise = model, config, stopping_criteria, normalise
        self.k, (_, self.prompt) = config.num_beams, input_ids.shape
        self.counted = self.prompt if counted is None else counted  # the prompt's length as 4.29 counted it
        eos, pad = hf_compat.eos_and_pad(config)
        fill = int(pad) if pad is not None else int(eos.flatten()[0]) if eos is not None else -1
        self.keep = max(2, 1 + (eos.numel() if eos is not None else 0)) * self.k
        self.top_mask = torch.arange(self.keep, device=input_ids.device) < self.k
        device, length = input_ids.device, config.max_length
        running = torch.full((1, self.k, length), fill, dtype=torch.long, device=device)
        running[0, :, :self.prompt] = input_ids
        scores = torch.zeros(1, self.k, device=device)
        scores[:, 1:] = -1e9
        idx = torch.full((1, self.k, length - self.prompt), -1, dtype=torch.int32, device=device)
        self.state = dict(running=running, running_scores=scores, running_idx=idx, best=running.clone(),
                          best_scores=torch.full_like(scores, -1e9), best_idx=idx.clone(),
                          finished=torch.zeros_like(scores, dtype=torch.bool),
                          open=torch.ones(1, 1, dtype=torch.bool, device=device), cur=self.prompt, done=False)

    @property
    def cur(self) -> int:
        return self.state["cur"]

    @property
    def done(self) -> bool:
        return self.state["done"]

    def sequences(self) -> torch.Tensor:
        """(K, cur) the running beams' tokens."""
        return self.state["running"][0, :, :self.cur]

    def snapshot(self) -> dict:
        return {k: v.clone() if torch.is_tensor(v) else v for k, v in self.state.items()}

    def restore(self, snapshot: dict) -> None:
        self.state = {k: v.clone() if torch.is_tensor(v) else v for k, v in snapshot.items()}

    def advance(self, log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One selection from (K, V) step log-probs: returns the parent slot (K,) and token (K,) of each new beam."""
        m, s, c, k, cur = self.model, self.state, self.config, self.k, self.cur
        acc = (log_probs.view(1, k, -1) + s["running_scores"][:, :, None]).view(1, -1)
        top_lp, top_seq, top_idx = hf_compat.top_k_continuations(
            m, accumulated_log_probs=acc, running_sequences=s["running"], running_beam_indices=s["running_idx"],
            cur_len=cur, decoder_prompt_len=self.prompt, do_sample=False, beams_to_keep=self.keep, num_beams=k,
            batch_size=1)
        hits = self.stopping(top_seq[0, :, :cur + 1], None).view(1, -1)
        s["running"], s["running_scores"], s["running_idx"] = hf_compat.running_beams_for_next_iteration(
            m, topk_log_probs=top_lp, topk_running_sequences=top_seq, topk_running_beam_indices=top_idx,
            next_token_hits_stopping_criteria=hits, num_beams=k)
        finished_lp, whole = top_lp, self.normalise == "whole"
        if whole:
            eos, _ = hf_compat.eos_and_pad(c)
            finished_lp = top_lp * finished_scale(top_seq[0, :, cur], eos, cur, self.prompt, self.counted,
                                                  c.length_penalty)
        s["best"], s["best_scores"], s["best_idx"], s["finished"] = hf_compat.update_finished_beams(
            m, sequences=s["best"], topk_running_sequences=top_seq, beam_scores=s["best_scores"],
            topk_log_probs=finished_lp,
            beam_indices=s["best_idx"], topk_running_beam_indices=top_idx,
            is_early_stop_heuristic_unsatisfied=s["open"], is_sent_finished=s["finished"],
            next_token_hits_stopping_criteria=hits, top_num_beam_mask=self.top_mask, num_beams=k, cur_len=cur,
            decoder_prompt_len=self.prompt, length_penalty=c.length_penalty, early_stopping=c.early_stopping)
        parents, tokens = s["running_idx"][0, :, cur - self.prompt].long(), s["running"][0, :, cur]
        s["cur"] = cur + 1
        # 4.29's `BeamHypotheses.is_done(next_scores.max(), cur_len)`: the best of all 2K continuations (an EOS
        # one included) over cur_len = the hypothesis length with the new token, prompt counted as `counted`;
        # 5.x takes the best running beam over the generated length. (5.x divides by cur + 1 − the argument.)
        s["open"] = hf_compat.check_early_stop_heuristic(
            m, is_early_stop_heuristic_unsatisfied=s["open"], running_beam_scores=top_lp if whole else
            s["running_scores"], beam_scores=s["best_scores"], is_sent_finished=s["finished"], cur_len=cur + 1,
            max_length=c.max_length, decoder_prompt_len=self.prompt - self.counted if whole else self.prompt,
            early_stopping=c.early_stopping, length_penalty=c.length_penalty)
        s["done"] = not bool(hf_compat.has_unfinished_sequences(m, s["open"], s["finished"], hits, c.early_stopping))
        return parents, tokens

    def result(self) -> torch.Tensor:
        """(1, L) the best finished sequence (HF's output cropping)."""
        generated = int((self.state["best_idx"][0, 0] + 1).bool().sum())
        return self.state["best"][0, :1, :self.prompt + generated]


# ---- the search -----------------------------------------------------------------------------
@dataclass
class _Step:
    logits: torch.Tensor  # (K, V) next-token logits of the running beams
    columns: torch.Tensor  # (K, n) float64 column sums of log(σ·W) over their response rows
    locations: torch.Tensor  # (K, n) their j* history


class OperaSearch:
    """`custom_generate` callable (a `halluc.engine.search.Search`): OPERA for one sample, which HF has
    expanded to `settings.beams` rows. `edit` is the attention edit that returns the OPERA layer's rows;
    `counted` the prompt's length as the official code's transformers 4.29 counted it (for the length
    normalisation of finished beams; None: our own prompt length)."""

    one_sample = True  # the rollback decision is per sample: generation runs one sample per search

    def __init__(self, settings: OperaSettings, edit, image_mask: torch.Tensor, counted: int | None = None):
        self.settings, self.edit, self.counted = settings, edit, counted
        self.image_mask = image_mask.reshape(1, -1)  # (1, prompt) bool

    def decoding(self, requested: Decoding) -> Decoding:
        """A beam search with OPERA's own beam count (greedy or that count may be asked for)."""
        if requested.do_sample:
            raise HallucError("opera is a beam search: do_sample is not supported")
        if requested.num_beams not in (1, self.settings.beams):
            raise HallucError(f"opera searches with its own beams={self.settings.beams}; set opera's 'beams' "
                              f"parameter instead of num_beams={requested.num_beams}")
        return dataclasses.replace(requested, num_beams=self.settings.beams)

    def __call__(self, model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                 **model_kwargs):
        k, prompt = input_ids.shape
        if k != generation_config.num_beams:
            raise HallucError("OPERA searches one sample at a time (halluc.generate splits batches)")
        if generation_config.output_scores:
            raise HallucError("OPERA is a beam search: per-step scores (return_scores) are not available")
        out = hf_compat.prefill(model, input_ids, generation_config, model_kwargs)
        rows = Rows(model, hf_compat.update_model_kwargs(model, out, model_kwargs), self.edit, prompt)
        step = _Step(out.logits[:, -1].float(), torch.zeros(k, 0, dtype=torch.float64, device=input_ids.device),
                     torch.zeros(k, 0, dtype=torch.long, device=input_ids.device))
        del out
        beams = Beams(model, input_ids, generation_config, stopping_criteria, self.settings.normalise, self.counted)
        retro, redo = Retrospection(self.settings), False
        while not beams.done:
            if redo:
                step, redo = self._full_vocabulary_step(step, rows, beams, retro, logits_processor), False
            else:
                step, redo = self._candidate_step(step, rows, beams, retro, logits_processor)
        return GenerateBeamDecoderOnlyOutput(sequences=beams.result())

    def _candidate_step(self, step: _Step, rows: Rows, beams: Beams, retro: Retrospection, processors):
        s, k, n = self.settings, beams.k, beams.cur - beams.prompt
        count = min(s.candidates, step.logits.shape[-1])
        candidates = step.logits.topk(count, dim=-1).indices  # (K, N)
        sequences = beams.sequences()
        rows.repeat(count)
        logits, attn = rows.forward(torch.cat([sequences.repeat_interleave(count, 0), candidates.reshape(-1, 1)], -1))
        attn = normalise_rows(attn)  # (K·N, cur + 1)
        log_phi, location, columns = over_trust(step.columns, attn[:, beams.prompt:].view(k, count, n + 1), s.scale)
        if n < FIRST_TOKENS:
            penalty = -(attn[:, :beams.prompt] * self.image_mask.to(attn.device)).sum(-1).view(k, count)
        else:
            penalty = log_phi.clamp(max=MAX_LOG_PENALTY).exp()
        locations = torch.cat([step.locations, location.mode(-1).values[:, None]], -1)
        if n >= FIRST_TOKENS:  # where a rollback can land
            retro.save(n, _Saved(beams.snapshot(), step.columns, locations))
        target = retro.target(locations, n)
        if target is not None:
            return self._rollback(target, rows, beams, retro), True
        scores = processors(sequences, candidate_scores(step.logits, candidates, penalty, s.weight))
        parents, tokens = beams.advance(scores)
        retro.chosen[n] = parents * scores.shape[-1] + tokens
        choice = (candidates[parents] == tokens[:, None]).int().argmax(-1)
        rows.select(parents * count + choice)
        return _Step(logits[parents * count + choice], columns[parents, choice], locations[parents]), False

    def _rollback(self, pos: int, rows: Rows, beams: Beams, retro: Retrospection) -> _Step:
        saved = retro.rewind(pos)
        beams.restore(saved.beams)
        rows.select(torch.arange(beams.k, device=saved.columns.device))  # any rows: all hold this sample's prompt
        rows.truncate(beams.prompt)
        logits, _ = rows.forward(beams.sequences(), new=pos)
        return _Step(logits, saved.columns, saved.locations)

    def _full_vocabulary_step(self, step: _Step, rows: Rows, beams: Beams, retro: Retrospection, processors) -> _Step:
        """The step after a rollback: plain beam scores over the whole vocabulary, minus the rejected pairs."""
        n, sequences = beams.cur - beams.prompt, beams.sequences()
        scores = step.logits.log_softmax(-1)
        scores.view(-1)[retro.rejected[n]] = -math.inf
        scores = processors(sequences, scores)
        parents, tokens = beams.advance(scores)
        retro.chosen[n] = parents * scores.shape[-1] + tokens
        rows.select(parents)
        logits, attn = rows.forward(beams.sequences())
        row = normalise_rows(attn)[:, beams.prompt:]  # (K, n + 1)
        columns = F.pad(step.columns[parents], (0, 1)) + (self.settings.scale * row.double()).log()
        return _Step(logits, columns, step.locations[parents])
