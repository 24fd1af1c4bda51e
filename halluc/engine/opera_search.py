"""OPERA's search (Huang et al., CVPR 2024): beam search over each beam's top candidates, penalised for
over-trust in a summary token, with retrospection-allocation (rollback). Used through
`model.generate(custom_generate=OperaSearch(...))`: HF prepares the inputs, the beams and the cache,
this loop replaces `_beam_search` and reuses its bookkeeping helpers (top 2K, EOS, length penalty).

One step, for B samples of K beams with N candidates each (the top-N tokens of the beam's logits):
  1. probe: the cache is repeated N times (`batch_repeat_interleave`: every candidate gets its own
     copy) and the B·K·N candidate tokens run as one batch. This gives each candidate's attention row
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
     (beam, token) pairs chosen there before, and chooses from the full vocabulary. In a batch, that
     sample leaves it and finishes alone (the batch's rows share one cache length); a sample whose
     beams are done leaves it too.

Compared with the official `opera_beam_search` (see `halluc.interventions.opera` for the full list):
the main forward and the N candidate forwards are one batched forward; rollback recomputes only the
response (the prompt's cache is kept); the rollback decision is per sample (the official code took it
over the whole batch) and per beam ancestry instead of per beam slot; numerics are float64/log-space.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

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

    def subset(self, rows: torch.Tensor) -> Rows:
        """A copy that holds only these rows, with its own cache (this one is left as it is)."""
        other = copy.copy(self)
        other.cache = copy.copy(self.cache)
        other.cache.layers = [copy.copy(layer) for layer in self.cache.layers]  # `batch_select_indices` rebinds
        other.kwargs = {key: other.cache if value is self.cache else value for key, value in self.kwargs.items()}
        other.select(rows)
        return other

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
    """HF's static-shape beam state for B samples (each its own beams, scores and finished set), advanced
    together with `GenerationMixin`'s beam helpers; samples that are done leave (`keep`).

    `normalise="whole"` scores finished beams as the official OPERA code did (by the length of the whole
    hypothesis, its prompt counted as `counted` tokens: see `finished_scale`), and stops early by 4.29's
    heuristic; "generated" as transformers 5 does. It can change which finished beam wins (tested)."""

    def __init__(self, model, input_ids: torch.Tensor, config, stopping_criteria, normalise: str = "whole",
                 counted=None):
        """input_ids (B·K, T): each sample's prompt repeated over its K beams; counted: int or (B,) per sample."""
        self.model, self.config, self.stopping, self.normalise = model, config, stopping_criteria, normalise
        self.k, self.prompt = config.num_beams, input_ids.shape[1]
        b, device, length = input_ids.shape[0] // self.k, input_ids.device, config.max_length
        counted = self.prompt if counted is None else counted
        self.counted = torch.as_tensor(counted, device=device).reshape(-1, 1).expand(b, 1).clone()  # (B, 1)
        eos, pad = hf_compat.eos_and_pad(config)
        self.fill = int(pad) if pad is not None else int(eos.flatten()[0]) if eos is not None else -1
        self.keep_top = max(2, 1 + (eos.numel() if eos is not None else 0)) * self.k
        self.top_mask = torch.arange(self.keep_top, device=device) < self.k
        running = torch.full((b, self.k, length), self.fill, dtype=torch.long, device=device)
        running[:, :, :self.prompt] = input_ids.view(b, self.k, -1)
        scores = torch.zeros(b, self.k, device=device)
        scores[:, 1:] = -1e9
        idx = torch.full((b, self.k, length - self.prompt), -1, dtype=torch.int32, device=device)
        self.state: dict[str, Any] = dict(running=running, running_scores=scores, running_idx=idx, best=running.clone(),
                          best_scores=torch.full_like(scores, -1e9), best_idx=idx.clone(),
                          finished=torch.zeros_like(scores, dtype=torch.bool),
                          open=torch.ones(b, 1, dtype=torch.bool, device=device), cur=self.prompt,
                          done=torch.zeros(b, dtype=torch.bool, device=device), counted=self.counted)

    @property
    def cur(self) -> int:
        return self.state["cur"]

    @property
    def size(self) -> int:
        return self.state["running"].shape[0]

    @property
    def done(self) -> torch.Tensor:
        """(B,) bool: which samples are done."""
        return self.state["done"]

    def sequences(self) -> torch.Tensor:
        """(B·K, cur) the running beams' tokens."""
        return self.state["running"][:, :, :self.cur].reshape(-1, self.cur)

    def snapshot(self, sample: int | None = None) -> dict:
        """A copy of the state (of one sample only, as a 1-sample state, when `sample` is given)."""
        pick = (lambda v: v) if sample is None else (lambda v: v[sample:sample + 1])
        return {k: pick(v).clone() if torch.is_tensor(v) else v for k, v in self.state.items()}

    def restore(self, snapshot: dict) -> None:
        self.state = {k: v.clone() if torch.is_tensor(v) else v for k, v in snapshot.items()}
        self.counted = self.state["counted"]

    def keep(self, samples: torch.Tensor) -> None:
        """Keep only these samples (indices into the current ones)."""
        self.state = {k: v.index_select(0, samples) if torch.is_tensor(v) else v for k, v in self.state.items()}
        self.counted = self.state["counted"]

    def advance(self, log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One selection from (B·K, V) step log-probs: returns each new beam's parent row (B, K; HF numbers the
        rows across the batch, sample b's beams are b·K ... b·K + K − 1) and token (B, K)."""
        m, s, c, k, cur, b = self.model, self.state, self.config, self.k, self.cur, self.size
        acc = (log_probs.view(b, k, -1) + s["running_scores"][:, :, None]).view(b, -1)
        top_lp, top_seq, top_idx = hf_compat.top_k_continuations(
            m, accumulated_log_probs=acc, running_sequences=s["running"], running_beam_indices=s["running_idx"],
            cur_len=cur, decoder_prompt_len=self.prompt, do_sample=False, beams_to_keep=self.keep_top, num_beams=k,
            batch_size=b)
        hits = self.stopping(top_seq[:, :, :cur + 1].reshape(-1, cur + 1), None).view(b, -1)
        s["running"], s["running_scores"], s["running_idx"] = hf_compat.running_beams_for_next_iteration(
            m, topk_log_probs=top_lp, topk_running_sequences=top_seq, topk_running_beam_indices=top_idx,
            next_token_hits_stopping_criteria=hits, num_beams=k)
        finished_lp, whole = top_lp, self.normalise == "whole"
        if whole:
            eos, _ = hf_compat.eos_and_pad(c)
            finished_lp = top_lp * finished_scale(top_seq[:, :, cur], eos, cur, self.prompt, self.counted,
                                                  c.length_penalty)
        s["best"], s["best_scores"], s["best_idx"], s["finished"] = hf_compat.update_finished_beams(
            m, sequences=s["best"], topk_running_sequences=top_seq, beam_scores=s["best_scores"],
            topk_log_probs=finished_lp,
            beam_indices=s["best_idx"], topk_running_beam_indices=top_idx,
            is_early_stop_heuristic_unsatisfied=s["open"], is_sent_finished=s["finished"],
            next_token_hits_stopping_criteria=hits, top_num_beam_mask=self.top_mask, num_beams=k, cur_len=cur,
            decoder_prompt_len=self.prompt, length_penalty=c.length_penalty, early_stopping=c.early_stopping)
        parents, tokens = s["running_idx"][:, :, cur - self.prompt].long(), s["running"][:, :, cur]
        s["cur"] = cur + 1
        # 4.29's `BeamHypotheses.is_done(next_scores.max(), cur_len)`: the best of all 2K continuations (an EOS
        # one included) over cur_len = the hypothesis length with the new token, prompt counted as `counted`;
        # 5.x takes the best running beam over the generated length. (5.x divides by cur + 1 − the argument.)
        s["open"] = hf_compat.check_early_stop_heuristic(
            m, is_early_stop_heuristic_unsatisfied=s["open"], running_beam_scores=top_lp if whole else
            s["running_scores"], beam_scores=s["best_scores"], is_sent_finished=s["finished"], cur_len=cur + 1,
            max_length=c.max_length, decoder_prompt_len=self.prompt - self.counted if whole else self.prompt,
            early_stopping=c.early_stopping, length_penalty=c.length_penalty)
        # HF's `_beam_search_has_unfinished_sequences`, per sample (a sample alone is its own batch)
        full = s["finished"].all(-1) & (c.early_stopping is True)
        s["done"] = ~(s["open"][:, 0] & ~full & ~hits.all(-1))
        return parents, tokens

    def result(self, sample: int) -> torch.Tensor:
        """(L,) one sample's best finished sequence (HF's output cropping)."""
        generated = int((self.state["best_idx"][sample, 0] + 1).bool().sum())
        return self.state["best"][sample, 0, :self.prompt + generated]


# ---- the search -----------------------------------------------------------------------------
@dataclass
class _Step:
    logits: torch.Tensor  # (B·K, V) next-token logits of the running beams
    columns: torch.Tensor  # (B·K, n) float64 column sums of log(σ·W) over their response rows
    locations: torch.Tensor  # (B·K, n) their j* history

    def keep(self, rows: torch.Tensor) -> _Step:
        return _Step(self.logits[rows], self.columns[rows], self.locations[rows])


@dataclass
class _Samples:
    """The samples still searching, in batch order: their index in the call, rollback rule and image mask."""
    ids: list[int]
    retro: list[Retrospection]
    image: torch.Tensor  # (B, prompt) bool

    def keep(self, keep: list[int]) -> _Samples:
        return _Samples([self.ids[i] for i in keep], [self.retro[i] for i in keep],
                        self.image[torch.tensor(keep, dtype=torch.long, device=self.image.device)])


def _beam_rows(samples: list[int], k: int, device) -> torch.Tensor:
    """(len(samples)·K,) the rows of these samples' beams."""
    first = torch.tensor(samples, dtype=torch.long, device=device)[:, None] * k
    return (first + torch.arange(k, device=device)).flatten()


class OperaSearch:
    """`custom_generate` callable (a `halluc.engine.search.Search`): OPERA for B samples, which HF has expanded
    to `settings.beams` rows each. All samples' candidate rows run as one forward; each sample keeps its own
    beams, rollback rule and length (`Beams`, `Retrospection`), and leaves the batch when it is done. A
    sample that rolls back leaves the batch too and finishes alone from the restored state (the batch shares
    one cache length). `edit` is the attention edit that returns the OPERA layer's rows; `counted` each
    sample's prompt length as the official code's transformers 4.29 counted it (int or (B,); None: our own)."""

    one_sample = False

    def __init__(self, settings: OperaSettings, edit, image_mask: torch.Tensor, counted=None):
        self.settings, self.edit, self.counted = settings, edit, counted
        self.image_mask = image_mask.reshape(-1, image_mask.shape[-1])  # (B, prompt) bool

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
        rows_in, prompt = input_ids.shape
        k, b = generation_config.num_beams, self.image_mask.shape[0]
        if rows_in != b * k:
            raise HallucError(f"OPERA got {rows_in} rows for {b} samples of {k} beams")
        if generation_config.output_scores:
            raise HallucError("OPERA is a beam search: per-step scores (return_scores) are not available")
        out = hf_compat.prefill(model, input_ids, generation_config, model_kwargs)
        rows = Rows(model, hf_compat.update_model_kwargs(model, out, model_kwargs), self.edit, prompt)
        step = _Step(out.logits[:, -1].float(), torch.zeros(rows_in, 0, dtype=torch.float64, device=input_ids.device),
                     torch.zeros(rows_in, 0, dtype=torch.long, device=input_ids.device))
        del out
        beams = Beams(model, input_ids, generation_config, stopping_criteria, self.settings.normalise, self.counted)
        samples = _Samples(list(range(b)), [Retrospection(self.settings) for _ in range(b)], self.image_mask)
        results = self._search(step, rows, beams, samples, logits_processor)
        sequences = [results[i] for i in range(b)]
        width = max(len(seq) for seq in sequences)
        padded = torch.full((b, width), beams.fill, dtype=torch.long, device=input_ids.device)
        for i, seq in enumerate(sequences):
            padded[i, :len(seq)] = seq
        return GenerateBeamDecoderOnlyOutput(sequences=cast(torch.LongTensor, padded))

    def _search(self, step: _Step, rows: Rows, beams: Beams, samples: _Samples, processors,
                redo: bool = False) -> dict[int, torch.Tensor]:
        """Run until every sample is done; returns each sample's best sequence by its index in the call.
        `redo`: the first step is the one after a rollback (one sample)."""
        results: dict[int, torch.Tensor] = {}
        while samples.ids:
            if redo:  # only ever one sample here: the step after its rollback
                step, redo = self._full_vocabulary_step(step, rows, beams, samples.retro[0], processors), False
            else:
                step, samples, rolled = self._candidate_step(step, rows, beams, samples, processors, results)
                if rolled is not None:
                    step, redo = rolled, True
                    continue
            done = beams.done.tolist()
            if any(done):
                for i in (i for i, d in enumerate(done) if d):
                    results[samples.ids[i]] = beams.result(i)
                step, samples = self._keep(step, rows, beams, samples, [i for i, d in enumerate(done) if not d])
        return results

    def _keep(self, step: _Step, rows: Rows, beams: Beams, samples: _Samples, keep: list[int]):
        """Only these samples (indices into the current ones) go on; their K rows each stay."""
        if not keep:
            return step, samples.keep(keep)
        k, device = beams.k, step.logits.device
        row_index = _beam_rows(keep, k, device)
        beams.keep(torch.tensor(keep, dtype=torch.long, device=beams.counted.device))
        rows.select(row_index)
        return step.keep(row_index), samples.keep(keep)

    def _candidate_step(self, step: _Step, rows: Rows, beams: Beams, samples: _Samples, processors, results: dict):
        """One step of every sample. Returns the next step, the samples that go on, and for a lone sample that
        rolls back the step of its rollback (else None); a sample of a batch that rolls back finishes alone
        into `results` and leaves."""
        s, k, n, b = self.settings, beams.k, beams.cur - beams.prompt, beams.size
        count = min(s.candidates, step.logits.shape[-1])
        candidates = step.logits.topk(count, dim=-1).indices  # (B·K, N)
        sequences = beams.sequences()
        rows.repeat(count)
        logits, attn = rows.forward(torch.cat([sequences.repeat_interleave(count, 0), candidates.reshape(-1, 1)], -1))
        attn = normalise_rows(attn)  # (B·K·N, cur + 1)
        log_phi, location, columns = over_trust(step.columns, attn[:, beams.prompt:].view(b * k, count, n + 1),
                                                s.scale)
        if n < FIRST_TOKENS:
            image = samples.image.to(attn.device).repeat_interleave(k * count, 0)  # (B·K·N, prompt)
            penalty = -(attn[:, :beams.prompt] * image).sum(-1).view(b * k, count)
        else:
            penalty = log_phi.clamp(max=MAX_LOG_PENALTY).exp()
        locations = torch.cat([step.locations, location.mode(-1).values[:, None]], -1)  # (B·K, n + 1)
        targets = {}
        for i, retro in enumerate(samples.retro):
            mine = slice(i * k, (i + 1) * k)
            if n >= FIRST_TOKENS:  # where a rollback can land
                retro.save(n, _Saved(beams.snapshot(i), step.columns[mine], locations[mine]))
            if (target := retro.target(locations[mine], n)) is not None:
                targets[i] = target
        if targets and b == 1:
            return step, samples, self._rollback(targets[0], rows, beams, samples.retro[0])
        if targets:  # they finish alone; the others go on
            for i, pos in targets.items():
                results[samples.ids[i]] = self._alone(i, pos, rows, beams, samples, count, processors)
            keep = [i for i in range(b) if i not in targets]
            if not keep:
                return step, samples.keep([]), None
            beam_rows = _beam_rows(keep, k, logits.device)  # (B'·K,)
            probe_rows = (beam_rows[:, None] * count + torch.arange(count, device=logits.device)).flatten()
            beams.keep(torch.tensor(keep, dtype=torch.long, device=beams.counted.device))
            rows.select(probe_rows)
            samples, b, step, logits = samples.keep(keep), len(keep), step.keep(beam_rows), logits[probe_rows]
            columns, locations = columns.view(-1, count, n + 1)[beam_rows], locations[beam_rows]
            candidates, penalty, sequences = candidates[beam_rows], penalty[beam_rows], sequences[beam_rows]
        else:
            columns = columns.view(-1, count, n + 1)
        scores = processors(sequences, candidate_scores(step.logits, candidates, penalty, s.weight))
        parents, tokens = beams.advance(scores)  # (B, K) each: the parent's row in the batch, the token
        for i, retro in enumerate(samples.retro):  # (beam within the sample, token) pairs
            retro.chosen[n] = (parents[i] - i * k) * scores.shape[-1] + tokens[i]
        parent_rows = parents.flatten()  # (B·K,)
        choice = (candidates[parent_rows] == tokens.flatten()[:, None]).int().argmax(-1)
        chosen = parent_rows * count + choice
        rows.select(chosen)
        return _Step(logits[chosen], columns[parent_rows, choice], locations[parent_rows]), samples, None

    def _alone(self, i: int, pos: int, rows: Rows, beams: Beams, samples: _Samples, count: int, processors):
        """Sample i of a batch rolls back to `pos`: it finishes alone from there (rows and beams of the batch
        stay as they are). Returns its best sequence."""
        device = samples.image.device
        mine = rows.subset(i * beams.k * count + torch.arange(beams.k, device=beams.counted.device) * count)
        single = copy.copy(beams)
        single.keep(torch.tensor([i], dtype=torch.long, device=beams.counted.device))
        step = self._rollback(pos, mine, single, samples.retro[i])
        alone = _Samples([samples.ids[i]], [samples.retro[i]], samples.image[i:i + 1].to(device))
        return self._search(step, mine, single, alone, processors, redo=True)[samples.ids[i]]

    def _rollback(self, pos: int, rows: Rows, beams: Beams, retro: Retrospection) -> _Step:
        """One sample (B = 1) returns to the state before token `pos`."""
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
        parents, tokens = parents.flatten(), tokens.flatten()  # one sample: (K,)
        retro.chosen[n] = parents * scores.shape[-1] + tokens
        rows.select(parents)
        logits, attn = rows.forward(beams.sequences())
        row = normalise_rows(attn)[:, beams.prompt:]  # (K, n + 1)
        columns = F.pad(step.columns[parents], (0, 1)) + (self.settings.scale * row.double()).log()
        return _Step(logits, columns, step.locations[parents])
