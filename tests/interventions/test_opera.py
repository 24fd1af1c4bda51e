"""OPERA: the over-trust penalty and the rollback rule on hand-made rows, independent candidate caches, the cache
after a rollback, identity with HF's beam search, refusals, and runs on every family."""
import math

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


def planted_beam_search(model, normalise: str) -> list[int]:
    """Two beams over a 5-token vocabulary (EOS = 4) after a 10-token prompt, with planted log-probs:
    A ends on EOS at the first step with log-prob −0.25; B = [1, EOS] ends at the second with −0.3;
    everything else is far worse. Returns the winner's new tokens."""
    from transformers import GenerationConfig, StoppingCriteriaList
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    from halluc.engine.opera_search import Beams

    prompt, eos = 10, 4
    config = GenerationConfig(num_beams=2, max_length=prompt + 3, length_penalty=1.0, early_stopping=False)
    config._eos_token_tensor, config._pad_token_tensor = torch.tensor([eos]), torch.tensor(0)
    beams = Beams(model, torch.zeros(2, prompt, dtype=torch.long), config,
                  StoppingCriteriaList([MaxLengthCriteria(prompt + 3), EosTokenCriteria(eos)]), normalise)
    worst = torch.full((2, 5), -100.0)
    first = worst.clone()
    first[0, 1], first[0, eos], first[0, 2] = -0.2, -0.25, -0.3  # A ends (EOS in the top 2); B goes on
    second = worst.clone()
    second[0, eos] = -0.1  # B (on token 1, sum −0.2) ends on EOS: −0.3
    for log_probs in (first, second, worst):
        if not beams.done:
            beams.advance(log_probs)
    tokens = beams.result()[0, prompt:].tolist()
    return tokens[:tokens.index(eos) + 1]  # (the rest is padding)


def test_official_normalisation_can_pick_another_finished_beam(tiny_llava):
    """By the generated length B wins (−0.3 / 2 > −0.25 / 1); by the whole length, as OPERA's transformers
    4.29 scored it (EOS not counted), A wins (−0.25 / 10 > −0.3 / 11)."""
    assert planted_beam_search(tiny_llava.model, "generated") == [1, 4]
    assert planted_beam_search(tiny_llava.model, "whole") == [4]
    assert OPERA().normalise == "whole" and OPERA(preset="fast").normalise == "whole"
