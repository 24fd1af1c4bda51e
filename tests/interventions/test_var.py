"""VAR: sink detection from massive activations at prefill, image-centric selection, the redistributed share."""
import dataclasses

import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions import attach
from halluc.interventions import var as var_module
from halluc.interventions.var import VAR, find_sinks, first_token_dims, kernel_settings, normalised
from halluc.kernels import AttentionEdit, attention_reference
from halluc.kernels.backend import active_edits
from tests.helpers import hook_count, make_session

PROMPTS = ["Describe the image.", "What is it?"]
# the tiny models have 2 layers (the default 2..L-1 is empty) and 64 hidden dims (|h/rms| <= 8 < τ = 20)
TINY = dict(layers=[0, 1], tau=2.0)


def first_logits(lvlm, images, method="none", **params):
    return halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=1, return_scores=True, **params).scores[:, 0]


def test_parameters_variants_and_layers():
    assert VAR().keep == pytest.approx(0.4) and VAR(variant="code").keep == 0.6  # paper: p moves; code: p stays
    assert kernel_settings(0.6, 0.3, "paper") == pytest.approx((0.4, 0.7))  # r >= ρ  <=>  sink share <= 1 − ρ
    assert kernel_settings(0.6, 0.3, "code") == (0.6, 0.3)
    assert VAR(p=0.0).is_identity() and VAR(p=1.0, variant="code").is_identity() and not VAR().is_identity()
    assert VAR().chosen_layers(32) == tuple(range(2, 32))  # the released code: 2..L-1, the last included
    assert VAR(except_last_layer=True).chosen_layers(32) == tuple(range(2, 31))  # the paper
    assert VAR(layers=[4, 1]).chosen_layers(32) == (1, 4)
    with pytest.raises(HallucError, match="the model has 2 layers"):
        VAR(layers=[3]).chosen_layers(2)
    assert VAR(sink_dims="llama-2-7b").dims(4096) == (2533, 1415)
    assert VAR(sink_dims="llama-2-13b").dims(5120) == (2100, 4743)
    assert VAR(sink_dims=[7, 3]).dims(64) == (7, 3) and VAR().dims(64) is None
    with pytest.raises(HallucError, match="out of range for hidden size 64"):
        VAR(sink_dims="llama-2-7b").dims(64)
    for bad in ("llama-3", [], [-1], [1.5]):
        with pytest.raises(HallucError, match="sink_dims"):
            VAR(sink_dims=bad)
    with pytest.raises(HallucError, match="variant"):
        VAR(variant="mixed")


def test_sink_detection_on_planted_hidden_states():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 6, 64, generator=g)
    h[:, :, 5] = h[:, :, 5].clamp(-1, 1)
    h[0, 0, 5] = 300.0  # row 0: first token massive in dim 5 ...
    h[0, 3, 5] = -300.0  # ... and token 3 too (|.|: the sign does not matter)
    h[0, 4, 9] = 300.0  # massive, but in a dimension the first token does not use
    h[1, 0, 5] = 300.0  # row 1: position 0 is left padding (ignored) ...
    h[1, 1, 5] = 300.0  # ... its first real token is position 1
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 0] = False
    hn = normalised(h)
    manual = (h / (h.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()).abs()
    torch.testing.assert_close(hn, manual)
    assert hn[0, 0, 5] > 7.5 and hn.amax() <= 8.0  # |h/rms| <= sqrt(64)
    dims = first_token_dims(hn, valid, tau=4.0)
    assert dims.nonzero().tolist() == [[0, 5], [1, 5]]
    assert find_sinks(hn, 4.0, dims, valid).nonzero().tolist() == [[0, 0], [0, 3], [1, 1]]
    assert find_sinks(hn, 4.0, (9,), valid).nonzero().tolist() == [[0, 4]]  # explicit dimensions
    assert find_sinks(hn, 4.0, (5, 9), valid).nonzero().tolist() == [[0, 0], [0, 3], [0, 4], [1, 1]]
    assert not find_sinks(hn, 8.5, (5, 9), valid).any()  # τ above sqrt(D): nothing is ever a sink


def attention_rows(probs: list[list[float]], image: list[bool], sinks: list[bool], method: VAR, start: int = 0):
    """Final attention of rows whose plain softmax is exactly `probs` (q = 0, column bias = log p, v = I)."""
    tq, tk = len(probs), len(probs[0])
    q, k, v = torch.zeros(1, 1, tq, tk), torch.zeros(1, 1, tk, tk), torch.eye(tk)[None, None]
    p = torch.tensor(probs)
    spec = dataclasses.replace(method.redistribution(torch.tensor([sinks])), query_start=start)
    # every row's probabilities through a per-row column bias: run the rows one by one
    rows = []
    for i in range(tq):
        edit = AttentionEdit(column_bias=p[i].log()[None], columns=torch.tensor([image]), redistribute=spec)
        rows.append(attention_reference(q[:, :, i:i + 1], k, v, None, scaling=1.0, edit=edit).out[0, 0, 0])
    return torch.stack(rows)


def test_redistribution_moves_the_documented_share():
    # columns: 0 BOS (text sink) | 1 visual sink | 2, 3, 4 image | 5 text
    image = [False, True, True, True, True, False]
    sinks = [True, True, False, False, False, False]
    a = torch.tensor([0.30, 0.10, 0.20, 0.10, 0.05, 0.25])  # visual-sink share 0.1/0.45, image mass 0.45
    for method, moved in ((VAR(p=0.6), 0.6), (VAR(p=0.6, variant="code"), 0.4), (VAR(p=0.25), 0.25)):
        out = attention_rows([a.tolist()], image, sinks, method)[0]
        omega = moved * (a[0] + a[1])
        torch.testing.assert_close(out[[0, 1]], (1 - moved) * a[[0, 1]])  # sinks keep 1 − moved
        torch.testing.assert_close(out[2:5], a[2:5] + omega * a[2:5] / a[2:5].sum())  # ∝ their attention
        assert out[5] == a[5]  # text untouched
        torch.testing.assert_close(out.sum(), torch.tensor(1.0))
    # rows that are not image-centric keep their attention
    low_image = [0.6, 0.02, 0.05, 0.05, 0.03, 0.25]  # image mass 0.15 < summ 0.2
    sink_heavy = [0.2, 0.3, 0.1, 0.05, 0.05, 0.3]  # visual-sink share 0.3/0.5 = 0.6 > 0.5
    out = attention_rows([low_image, sink_heavy], image, sinks, VAR())
    torch.testing.assert_close(out, torch.tensor([low_image, sink_heavy]))
    # ρ under each variant: visual-sink share 0.3/0.5 = 0.6 (non-sink ratio 0.4)
    assert not torch.allclose(attention_rows([sink_heavy], image, sinks, VAR(rho=0.35))[0],
                              torch.tensor(sink_heavy))  # paper: r = 0.4 >= 0.35
    assert torch.allclose(attention_rows([sink_heavy], image, sinks, VAR(rho=0.35, variant="code"))[0],
                          torch.tensor(sink_heavy))  # code: 0.6 > 0.35
    # rows before the end of the image (prefill) are not edited
    out = attention_rows([a.tolist()], image, sinks, VAR(), start=10)
    torch.testing.assert_close(out[0], a)


def test_keep_all_and_no_sinks_are_bit_identical(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "var", p=0.0, **TINY), vanilla)
    assert torch.equal(first_logits(tiny_llava, images, "var", p=1.0, variant="code", **TINY), vanilla)
    assert VAR(p=0.0).hooks(None) == [] and VAR(p=0.0).attention_edits(None) == {}
    # hooks running but nothing above τ: the edits stay off
    assert torch.equal(first_logits(tiny_llava, images, "var", layers=[0, 1], tau=9.0), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "var", **TINY), vanilla)


def test_sinks_fill_each_layers_edit_before_its_attention_runs(tiny_llava, images):
    """The prefill itself is redistributed: layer l's edit gets its sinks in layer l's pre-hook."""
    model, adapter = tiny_llava.model, tiny_llava.adapter
    pil = halluc.api.load_images(images)
    inputs = adapter.build_inputs(tiny_llava.processor, pil, PROMPTS)
    session = make_session(tiny_llava, inputs, pil, PROMPTS)
    with attach(session, [VAR(**TINY)]), torch.no_grad():
        edited = model(**inputs).logits
    edits, state = session.state["var"]
    assert sorted(state.sinks) == [0, 1] and state.dims is not None and state.dims.any()
    assert state.sinks[1].any()
    for layer, edit in edits.items():
        if state.sinks[layer].any():  # the edit ran in this very prefill, with this layer's sinks
            assert edit.record.calls == 1 and torch.equal(edit.redistribute.sources, state.sinks[layer])
            first = inputs["attention_mask"].int().argmax(-1)  # each row's first real token (left padding)
            has_dims = state.dims.any(-1)
            assert torch.equal(state.sinks[layer][torch.arange(2), first] & has_dims, has_dims)  # it is a sink
        else:  # no sink in this layer (a tiny random model): the edit stays off
            assert edit.redistribute is None and edit.record.calls == 0
    # the same edits given up front, no hooks: the same logits
    fixed = {adapter.attention(model, layer): AttentionEdit(columns=session.image_mask,
                                                           redistribute=VAR(**TINY).redistribution(state.sinks[layer]))
             for layer, edit in edits.items() if state.sinks[layer].any()}
    with active_edits(fixed), torch.no_grad():
        assert torch.equal(model(**inputs).logits, edited)
    with torch.no_grad():
        plain = model(**inputs).logits
    assert not torch.allclose(plain, edited)


def test_auto_dimensions_come_from_the_model(tiny_llava, images):
    """A planted massive dimension on the first token (and on two image tokens) is found and used."""
    model, adapter = tiny_llava.model, tiny_llava.adapter
    pil = halluc.api.load_images(images)
    inputs = adapter.build_inputs(tiny_llava.processor, pil, PROMPTS)
    image_pos = adapter.image_mask(model, inputs["input_ids"])[0].nonzero().flatten()
    first = inputs["attention_mask"].int().argmax(-1)

    def plant(module, args, kwargs):
        h = (args[0] if args else kwargs["hidden_states"]).clone()
        if h.shape[1] > 1:
            h[torch.arange(2), first, 7] = 1e3
            h[0, image_pos[[2, 5]], 7] = -1e3
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    handle = adapter.resolve(model, "layers.1").register_forward_pre_hook(plant, with_kwargs=True)
    try:
        session = make_session(tiny_llava, inputs, pil, PROMPTS)
        with attach(session, [VAR(layers=[1], tau=7.0)]), torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    _, state = session.state["var"]
    assert state.dims.nonzero().tolist() == [[0, 7], [1, 7]]
    expected = torch.zeros_like(state.sinks[1])
    expected[torch.arange(2), first] = True
    expected[0, image_pos[[2, 5]]] = True
    assert torch.equal(state.sinks[1], expected)


def test_detects_once_at_prefill_and_reuses_the_sinks(tiny_llava, images, monkeypatch):
    calls = []
    real = var_module.find_sinks
    monkeypatch.setattr(var_module, "find_sinks", lambda *a, **k: calls.append(1) or real(*a, **k))
    halluc.generate(tiny_llava, images, PROMPTS, "var", max_new_tokens=3, **TINY)
    assert len(calls) == 2  # one per chosen layer, at the prefill only


def test_out_of_range_sink_dimensions_are_refused_before_any_hook(tiny_llava, images):
    before = hook_count(tiny_llava.model)
    with pytest.raises(HallucError, match="out of range"):
        halluc.generate(tiny_llava, images, PROMPTS, "var", sink_dims="llama-2-7b", layers=[0])
    assert hook_count(tiny_llava.model) == before

