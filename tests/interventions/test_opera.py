"""OPERA: the over-trust penalty and the rollback rule on hand-made rows, independent candidate caches, the cache
after a rollback, identity with HF's beam search, refusals, and runs on every family."""
import math
import zlib

import pytest
import torch
from transformers import DynamicCache

import halluc
from halluc.engine import opera_search as opera
from halluc.engine.opera_search import (
    FIRST_TOKENS,
    OperaSearch,
    OperaSettings,
    Retrospection,
    Rows,
    _Saved,
    candidate_scores,
    normalise_rows,
    over_trust,
)
from halluc.errors import HallucError
from halluc.images import load_image
from halluc.interventions.opera import OPERA
from halluc.kernels.backend import active_edits, current_edits
from halluc.kernels.edits import AttentionEdit
from halluc.modeling.cache import cache_keyword
from tests.conftest import FAMILIES
from tests.helpers import hook_count

PROMPTS = ["What is in the image?", "Describe it."]


def naive_penalty(window: torch.Tensor, scale: float) -> tuple[float, int]:
    """OPERA's formula read literally: max_j 1e-7 * prod_{i >= j} scale * W[i, j] over an (n, n) window."""
    phi = [1e-7 * math.prod(scale * window[i, j].item() for i in range(j, len(window))) for j in range(len(window))]
    return max(phi), max(range(len(phi)), key=phi.__getitem__)


def test_over_trust_equals_the_column_products_on_hand_made_rows():
    torch.manual_seed(0)
    window = torch.rand(6, 6).tril() + torch.eye(6) * 0.05
    window[2:, 2] += 0.6  # every token after token 2 leans on it: a summary token
    window = window / window.sum(-1, keepdim=True)
    columns = torch.zeros(1, 0, dtype=torch.float64)
    for i in range(6):  # the beam's history grows one row at a time, as during the search
        log_phi, loc, new = over_trust(columns, window[i, :i + 1].view(1, 1, -1), scale=50.0)
        phi, j = naive_penalty(window[:i + 1, :i + 1], 50.0)
        assert math.exp(log_phi.item()) == pytest.approx(phi, rel=1e-9) and loc.item() == j
        columns = new[:, 0]
    assert loc.item() == 2


def test_candidate_scores_renormalise_over_the_candidates():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5, -1.0, 0.0]])
    out = candidate_scores(logits, torch.tensor([[1, 2, 0]]), torch.tensor([[10.0, 0.0, -0.5]]), weight=0.5)
    expected = torch.tensor([3.0 - 5.0, 2.0, 1.0 + 0.25]).log_softmax(-1)
    torch.testing.assert_close(out[0, [1, 2, 0]], expected)
    assert torch.isinf(out[0, [3, 4, 5]]).all()
    huge = torch.full((1, 2), math.exp(opera.MAX_LOG_PENALTY), dtype=torch.float64)  # the largest penalty
    big = candidate_scores(logits, torch.tensor([[1, 2]]), huge, weight=0.0)
    assert torch.isfinite(big[0, [1, 2]]).all()  # 0 * huge penalty stays finite


def test_rows_are_max_over_heads_then_normalised():
    rows = torch.tensor([[[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]]])  # (1, H=2, T=3)
    torch.testing.assert_close(normalise_rows(rows), torch.tensor([[0.5, 0.5, 0.7]]) / 1.7)


def test_rollback_rule_threshold_location_visits_and_window():
    retro = Retrospection(OperaSettings(threshold=2, candidates=2, window=512))
    retro.saved = dict.fromkeys(range(30))
    at12 = torch.tensor([[3, 12, 12, 12], [12, 12, 12, 5]])
    assert retro.target(at12[:, :3], n=20) is None  # beam 1 has seen 12 only twice: not more than r
    assert retro.target(at12[:, [1, 2, 3, 1]], n=20) == 13  # both beams more than twice, mode 12
    assert retro.target(at12[:, [1, 2, 3, 1]], n=20) == 13
    assert retro.target(at12[:, [1, 2, 3, 1]], n=20) == 12  # position 13 used N times: one earlier
    assert retro.target(at12[:, [1, 2, 3, 1]], n=20) == 12
    assert retro.target(at12[:, [1, 2, 3, 1]], n=20) is None  # both used up
    early = torch.full((2, 5), FIRST_TOKENS - 2)
    assert retro.target(early, n=20) is None  # no rollback to the first tokens
    short = Retrospection(OperaSettings(threshold=2, candidates=5, window=4))
    short.saved = dict.fromkeys(range(30))
    assert short.target(torch.full((2, 4), 12), n=25) == 21  # at most `window` steps back


def test_rewind_forbids_what_was_chosen_and_forgets_the_future():
    retro = Retrospection(OperaSettings())
    for n in range(6):
        retro.save(n, _Saved({"n": n}, torch.zeros(1, n), torch.zeros(1, n + 1)))
        retro.chosen[n] = torch.tensor([100 + n])
    assert retro.rewind(3).beams == {"n": 3}
    assert set(retro.saved) == {0, 1, 2, 3} and set(retro.chosen) == {0, 1, 2}
    assert retro.rejected[3].tolist() == [103]
    retro.chosen[3] = torch.tensor([200])
    retro.rewind(3)
    assert retro.rejected[3].tolist() == [103, 200]


def test_each_candidate_has_its_own_cache(tiny_llava, images):
    """The probe repeats the cache per candidate: each row equals a fresh forward of prompt + its token,
    and writing into one candidate's cache leaves the others untouched."""
    model, adapter = tiny_llava.model, tiny_llava.adapter
    inputs = adapter.build_inputs(tiny_llava.processor, [load_image(images[0])], [PROMPTS[0]])
    edit = AttentionEdit(return_attention_row=True)
    tokens = torch.tensor([[5], [17], [42]])
    checked = []

    def fresh(ids):
        with torch.no_grad():
            return model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits[0, -1].float()

    def search(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False, **kwargs):
        out = model._prefill(input_ids, generation_config, kwargs)
        rows = Rows(model, model._update_model_kwargs_for_generation(out, kwargs), edit, input_ids.shape[1])
        rows.repeat(3)
        logits, attn = rows.forward(torch.cat([input_ids.repeat(3, 1), tokens], -1))
        assert attn.shape[0] == 3 and attn.shape[-1] == input_ids.shape[1] + 1
        for i in range(3):
            expected = fresh(torch.cat([input_ids, tokens[i:i + 1]], -1))
            torch.testing.assert_close(logits[i], expected, atol=1e-4, rtol=1e-4)
        layer = rows.cache.layers[0]
        keys_1 = layer.keys[1].clone()
        layer.keys[0] += 1.0  # corrupt candidate 0 only
        assert torch.equal(layer.keys[1], keys_1)
        rows.select(torch.tensor([1, 2]))
        logits, _ = rows.forward(torch.cat([input_ids.repeat(2, 1), tokens[1:], torch.tensor([[7], [9]])], -1))
        for i, (c, nxt) in enumerate(((17, 7), (42, 9))):
            torch.testing.assert_close(logits[i], fresh(torch.cat([input_ids, torch.tensor([[c, nxt]])], -1)),
                                       atol=1e-4, rtol=1e-4)
        checked.append(True)
        return input_ids

    with active_edits({adapter.attention(model, -1): edit}), torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, custom_generate=search)
    assert checked


def test_no_penalty_all_candidates_no_rollback_is_hf_beam_search(tiny_models, images):
    lvlm = tiny_models("tiny-qwen2-vl")
    vocab = lvlm.model.get_output_embeddings().weight.shape[0]
    ours = halluc.generate(lvlm, images[1:], PROMPTS[1:], "opera", beams=2, candidates=vocab, weight=0.0,
                           threshold=10 ** 6, normalise="generated", max_new_tokens=4)
    assert ours == halluc.generate(lvlm, images[1:], PROMPTS[1:], num_beams=2, max_new_tokens=4)


def test_forced_rollback_rebuilds_the_cache_and_forbids_the_old_choice(tiny_llava, images, monkeypatch):
    """Plant a summary token at response position 10 so that OPERA rolls back, then check every rebuilt cache."""
    real = opera.normalise_rows
    prompt_len = []

    def planted(rows):
        out = real(rows)
        column = prompt_len[0] + FIRST_TOKENS
        if out.shape[-1] > column:
            out = out.clone()
            out[:, column] += 1.0
            out = out / out.sum(-1, keepdim=True)
        return out

    seen = {"rollbacks": 0, "redo": 0}
    rollback, redo = OperaSearch._rollback, OperaSearch._full_vocabulary_step

    def checked_rollback(self, pos, rows, beams, retro):
        step = rollback(self, pos, rows, beams, retro)
        seq, k = beams.sequences(), beams.k  # a fresh prompt prefill, then the restored responses
        cache = {cache_keyword(tiny_llava.model): DynamicCache(config=tiny_llava.model.config)}
        with torch.no_grad():
            tiny_llava.model(**{key: v.repeat(k, *[1] * (v.dim() - 1)) for key, v in inputs.items()}, **cache)
            full = tiny_llava.model(input_ids=seq[:, beams.prompt:], attention_mask=torch.ones_like(seq), **cache)
        torch.testing.assert_close(step.logits, full.logits[:, -1].float(), atol=1e-4, rtol=1e-4)
        seen["rollbacks"] += 1
        return step

    def checked_redo(self, step, rows, beams, retro, processors):
        n = beams.cur - beams.prompt
        out = redo(self, step, rows, beams, retro, processors)
        assert not set(retro.chosen[n].tolist()) & set(retro.rejected[n].tolist())
        seen["redo"] += 1
        return out

    inputs = tiny_llava.adapter.build_inputs(tiny_llava.processor, [load_image(images[0])], [PROMPTS[0]])
    prompt_len.append(inputs["input_ids"].shape[1])
    monkeypatch.setattr(opera, "normalise_rows", planted)
    monkeypatch.setattr(OperaSearch, "_rollback", checked_rollback)
    monkeypatch.setattr(OperaSearch, "_full_vocabulary_step", checked_redo)
    texts = halluc.generate(tiny_llava, [images[0]], [PROMPTS[0]], "opera", beams=3, candidates=2, threshold=2,
                            max_new_tokens=16)
    assert len(texts) == 1 and seen["rollbacks"] >= 2 and seen["redo"] == seen["rollbacks"]


def test_nothing_left_after_an_error_inside_the_search(tiny_llava, images, monkeypatch):
    before = hook_count(tiny_llava.model)
    backend = tiny_llava.model.config.text_config._attn_implementation
    monkeypatch.setattr(Rows, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        halluc.generate(tiny_llava, images, PROMPTS, "opera", max_new_tokens=3)
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}
    assert tiny_llava.model.config.text_config._attn_implementation == backend


@pytest.mark.parametrize("kwargs,message", [
    (dict(do_sample=True), "supports greedy, beam decoding, not sample"),
    (dict(num_beams=3), "set opera's 'beams' parameter"),
    (dict(return_scores=True), "per-step scores"),
    (dict(method=["opera", "vcd"]), "cannot be stacked with a method that adds decoding branches"),
    (dict(layer=7), "layer 7 does not exist"),
])
def test_requests_opera_cannot_serve_are_refused(tiny_llava, images, kwargs, message):
    kwargs = {"method": "opera", **kwargs}
    with pytest.raises(HallucError, match=message):
        halluc.generate(tiny_llava, images[:1], PROMPTS[:1], max_new_tokens=2, **kwargs)


def test_fast_preset_and_explicit_values():
    assert (OPERA(preset="fast").threshold, OPERA(preset="fast").candidates) == (25, 1)
    assert OPERA(preset="fast", threshold=20).threshold == 20
    assert (OPERA().threshold, OPERA().candidates, OPERA().scale, OPERA().beams) == (15, 5, 50.0, 5)


@pytest.mark.parametrize("name", FAMILIES)
def test_runs_past_the_ten_token_bonus_on_every_family(tiny_models, images, name):
    lvlm = tiny_models(name)
    assert len(halluc.generate(lvlm, images, PROMPTS, "opera", max_new_tokens=12)) == 2  # past the 10-token bonus
    assert len(halluc.generate(lvlm, images[:1], PROMPTS[:1], "opera", preset="fast", beams=1, max_new_tokens=4)) == 1



@pytest.mark.parametrize("other", ["vhr", "cca"])
def test_opera_refuses_methods_with_prefill_row_state(tiny_models, images, other):
    from halluc.errors import HallucError

    with pytest.raises(HallucError, match=f"'{other}' cannot be stacked with 'opera'"):
        halluc.generate(tiny_models("tiny-llava"), images, ["a", "b"], [other, "opera"], max_new_tokens=2)


def run_beams(model, rows, *, prompt: int = 10, counted: int | None = None, normalise: str = "whole", beams: int = 2,
              max_new: int = 3, vocab: int = 5, eos: int = 4) -> list[int]:
    """Our `Beams` over planted log-probs: `rows(prefix)` gives the (vocab,) log-probs after the generated
    `prefix`. The prompt is `prompt` tokens wide and counts as `counted` (None: `prompt`). Returns the
    winner's new tokens, up to its EOS."""
    from transformers import GenerationConfig, StoppingCriteriaList
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    from halluc.engine.opera_search import Beams

    config = GenerationConfig(num_beams=beams, max_length=prompt + max_new, length_penalty=1.0, early_stopping=False)
    config._eos_token_tensor, config._pad_token_tensor = torch.tensor([eos]), torch.tensor(0)
    stopping = StoppingCriteriaList([MaxLengthCriteria(prompt + max_new), EosTokenCriteria(eos)])
    search = Beams(model, torch.zeros(beams, prompt, dtype=torch.long), config, stopping, normalise, counted)
    while not search.done.all():
        search.advance(torch.stack([rows(seq.tolist()) for seq in search.sequences()[:, prompt:]]))
    tokens = search.result(0)[prompt:].tolist()
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


def planted(table: dict, vocab: int = 5):
    """Log-probs from a table {prefix: {token: log-prob}}; every other token −100."""
    def rows(prefix):
        out = torch.full((vocab,), -100.0)
        for token, value in table.get(tuple(prefix), {}).items():
            out[token] = value
        return out
    return rows


def test_official_normalisation_can_pick_another_finished_beam(tiny_llava):
    """A ends on EOS at the first step with log-prob −0.25; B = [1, EOS] ends at the second with −0.3. By the
    generated length B wins (−0.3 / 2 > −0.25 / 1); by the whole length, as OPERA's transformers 4.29 scored
    it (EOS not counted), A wins (−0.25 / 10 > −0.3 / 11)."""
    rows = planted({(): {1: -0.2, 4: -0.25, 2: -0.3}, (1,): {4: -0.1}})
    assert run_beams(tiny_llava.model, rows, normalise="generated") == [1, 4]
    assert run_beams(tiny_llava.model, rows, normalise="whole") == [4]
    assert OPERA().normalise == "whole" and OPERA(preset="fast").normalise == "whole"


def test_the_image_counts_as_one_token_and_that_picks_another_winner(tiny_llava):
    """A 10-token prompt whose 6 image tokens the official code's input_ids held as one placeholder: it
    counts as 5. A = [EOS] (−0.25), B = [1, EOS] (−0.29): counted as 10 A wins (−0.25/10 > −0.29/11),
    counted as 5 B wins (−0.29/6 > −0.25/5)."""
    rows = planted({(): {1: -0.2, 4: -0.25, 2: -0.3}, (1,): {4: -0.09}})
    assert run_beams(tiny_llava.model, rows, counted=None) == [4]
    assert run_beams(tiny_llava.model, rows, counted=5) == [1, 4]


def test_early_stop_divides_the_best_continuation_by_the_length_with_the_new_token(tiny_llava):
    """4.29's `is_done(next_scores.max(), input_ids.shape[-1] + 1)`, the prompt counted as 5. After step 2,
    A = [EOS] (−0.5/5 = −0.1) and B = [1, EOS] (−0.582/6 = −0.097) are kept; at step 3 the best continuation
    is [1, 3, 3] (−0.75). Divided by the length with the new token (8) it can still beat the worst kept
    (−0.09375 > −0.1): the search goes on and C = [1, 3, 3, EOS] (−0.751/8 = −0.0939) wins. Divided by the
    length before the new token (7: −0.107) the search would stop there and return B."""
    rows = planted({(): {1: -0.1, 4: -0.5, 2: -0.6}, (1,): {4: -0.482, 3: -0.45}, (1, 3): {3: -0.2},
                    (1, 3, 3): {4: -0.001}})
    assert run_beams(tiny_llava.model, rows, counted=5, max_new=6) == [1, 3, 3, 4]


V, EOS = 6, 5


def seeded(seed: int):
    """A log-prob row per prefix, a fixed function of (seed, prefix)."""
    def rows(prefix):
        g = torch.Generator().manual_seed(zlib.crc32(repr((seed, tuple(prefix))).encode()))
        x = torch.randn(V, generator=g) * 1.5
        x[EOS] += 0.5
        return x.log_softmax(-1)
    return rows


def beam_search_4_29(rows, counted: int, k: int, max_new: int) -> list[int]:
    """transformers 4.29's beam scorer as OPERA's code ran it, re-derived from its `BeamSearchScorer.process`,
    `finalize` and `BeamHypotheses` (length penalty 1, early_stopping False): top 2K continuations; an EOS
    one of rank < K becomes a hypothesis of length counted + its tokens (EOS not counted); stop when K are
    kept and the worst kept ≥ the best continuation / (counted + tokens so far + 1); at max_length every
    running beam becomes a hypothesis of length counted + max_new. Returns the best one's tokens."""
    running, kept = [((), 0.0)] + [((), -1e9)] * (k - 1), []

    def add(tokens, score, length):
        kept.append((score / length, tokens))
        kept.sort(reverse=True)
        del kept[k:]

    for step in range(max_new):
        top = sorted(((score + float(rows(list(tokens))[v]), tokens, v) for tokens, score in running for v in range(V)),
                     key=lambda c: -c[0])[:2 * k]
        running = []
        for rank, (score, tokens, v) in enumerate(top):
            if v == EOS and rank < k:
                add(tokens + (EOS,), score, counted + len(tokens))
            elif v != EOS and len(running) < k:
                running.append((tokens + (v,), score))
        if len(kept) == k and kept[-1][0] >= top[0][0] / (counted + step + 1):
            return list(kept[0][1])
    for tokens, score in running:
        add(tokens, score, counted + max_new)
    return list(kept[0][1])


def test_beams_pick_what_transformers_4_29_picked_with_the_official_length(tiny_llava):
    """On 100 seeded log-prob tables (3 beams, 6 new tokens, a 30-token prompt that counts as 5), our
    `Beams` returns the 4.29 scorer's winner every time; in some of them the full prompt length would not."""
    differs = 0
    for seed in range(100):
        rows = seeded(seed)
        official = beam_search_4_29(rows, 5, 3, 6)
        assert run_beams(tiny_llava.model, rows, prompt=30, counted=5, beams=3, max_new=6, vocab=V, eos=EOS) == official
        differs += official != beam_search_4_29(rows, 30, 3, 6)
    assert differs >= 10


@pytest.mark.parametrize("name", FAMILIES)
def test_the_search_gets_the_prompt_length_the_official_code_counted(tiny_models, images, monkeypatch, name):
    """One token per image (and the text as it is), or 1 for InstructBLIP, whose official path passed
    inputs_embeds (4.29 then holds a dummy [[bos]] as input_ids); left padding is not counted."""
    lvlm, seen = tiny_models(name), []
    real = OperaSearch.__init__
    monkeypatch.setattr(OperaSearch, "__init__", lambda self, *a: (seen.append(a[-1]), real(self, *a))[1])
    halluc.generate(lvlm, images, ["Is there a cat?", "Describe the picture in a few words, please."], "opera",
                    preset="fast", beams=2, max_new_tokens=2)
    inputs = lvlm.adapter.build_inputs(lvlm.processor, [load_image(images[0])], ["Is there a cat?"])
    image = lvlm.adapter.image_mask(lvlm.model, inputs["input_ids"])[0]
    text = int((~image).sum())
    expected = 1 if lvlm.family == "instructblip" else text + 1
    assert image.sum() > 1 and seen[0][0] == expected
    assert seen[0][1] > seen[0][0] or lvlm.family == "instructblip"  # the longer prompt, its padding not counted


def test_a_batch_equals_each_sample_alone_past_the_bonus_and_through_rollbacks(tiny_llava, images, monkeypatch):
    """Three samples of different prompt lengths in one search, with a summary token planted at response
    position 10 so that they roll back (a sample that rolls back in a batch leaves it and finishes alone):
    each sample's tokens equal its own run, and rollbacks happened inside the batch."""
    real, prompt = opera.normalise_rows, []

    def planted(rows):
        out = real(rows)
        column = prompt[-1] + FIRST_TOKENS
        if out.shape[-1] > column:
            out = out.clone()
            out[:, column] += 1.0
            out = out / out.sum(-1, keepdim=True)
        return out

    call, alone = OperaSearch.__call__, OperaSearch._alone
    seen = {"alone": 0}

    def remember_prompt(self, model, input_ids, *args, **kwargs):
        prompt.append(input_ids.shape[1])
        return call(self, model, input_ids, *args, **kwargs)

    def counted_alone(self, *args, **kwargs):
        seen["alone"] += 1
        return alone(self, *args, **kwargs)

    monkeypatch.setattr(opera, "normalise_rows", planted)
    monkeypatch.setattr(OperaSearch, "__call__", remember_prompt)
    monkeypatch.setattr(OperaSearch, "_alone", counted_alone)
    prompts = ["What is in the image?", "Describe it.", "Is there a dog in the picture, and what colour is it?"]
    kwargs = dict(beams=3, candidates=2, threshold=2, max_new_tokens=16)
    batch = halluc.generate(tiny_llava, [images[0], images[1], images[0]], prompts, "opera", **kwargs)
    assert seen["alone"] >= 1
    singles = [halluc.generate(tiny_llava, [i], [p], "opera", **kwargs)[0]
               for i, p in zip([images[0], images[1], images[0]], prompts)]
    assert batch == singles
