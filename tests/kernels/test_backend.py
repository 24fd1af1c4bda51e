"""The "halluc" backend inside a tiny LLaVA (the spec's §2 recipe, built inline): identical to SDPA
with no edit (bit for bit, padded batches too), Triton path == reference path with edits, outputs
handed back, and no edit left behind after `active_edits`, even on error."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from halluc.kernels import AttentionEdit, Redistribution, ScoreBoost, attention_reference, use_impl
from halluc.kernels.backend import BACKEND, active_edits, current_edits, halluc_attention, register_backend

IMAGE_ID = 127
TXT = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_llava(attn) -> nn.Module:
    vc = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          image_size=28, patch_size=7, projection_dim=32)
    cfg = LlavaConfig(vision_config=vc, text_config=LlamaConfig(**TXT), image_token_index=IMAGE_ID, image_seq_length=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlavaForConditionalGeneration._from_config(cfg, attn_implementation=attn).eval()


@pytest.fixture(scope="module")
def models():
    register_backend()
    return tiny_llava({"text_config": BACKEND, "vision_config": "sdpa"}), tiny_llava("sdpa")


@pytest.fixture(scope="module")
def batch():
    """Two prompts, the second left-padded by 3: BOS, 16 image tokens, text."""
    g = torch.Generator().manual_seed(1)
    row0 = [1] + [IMAGE_ID] * 16 + [5, 6, 7, 8, 9, 10]
    row1 = [0, 0, 0] + [1] + [IMAGE_ID] * 16 + [11, 12, 13]
    ids = torch.tensor([row0, row1])
    return dict(input_ids=ids, attention_mask=(ids != 0).long(), pixel_values=torch.randn(2, 3, 28, 28, generator=g))


def lm_attention(model):
    return [layer.self_attn for layer in model.model.language_model.layers]


def make_edits(model, batch, **extra):
    """Boost + redistribution + biases on every LM layer, over the prompt columns."""
    ids = batch["input_ids"]
    img = ids == IMAGE_ID
    sinks = (ids == 1) | (img & (torch.arange(ids.shape[1]) % 7 == 0))  # BOS and two image tokens
    bias = torch.zeros(ids.shape, dtype=torch.float32)
    bias[img.nonzero()[3][0], img.nonzero()[3][1]] = float("-inf")
    head_bias = torch.tensor([math.log(2.0), 0.0, 0.5, 0.0])
    redistribute = Redistribution(sinks, keep=0.6, max_source_share=0.9, min_mass=0.05)
    return {m: AttentionEdit(columns=img, column_bias=bias, head_bias=head_bias, boost=ScoreBoost(0.5),
                             redistribute=redistribute, **extra)
            for m in lm_attention(model)}


def test_no_edit_is_bit_identical_to_sdpa(models, batch):
    halluc_model, sdpa_model = models
    assert halluc_model.config.text_config._attn_implementation == BACKEND
    assert halluc_model.config.vision_config._attn_implementation == "sdpa"
    with torch.no_grad():
        for inputs in (batch, {k: v[:1] for k, v in batch.items()}):  # padded batch and a single row
            assert torch.equal(halluc_model(**inputs).logits, sdpa_model(**inputs).logits)
        with active_edits({}):
            assert torch.equal(halluc_model(**batch).logits, sdpa_model(**batch).logits)
        with active_edits({m: AttentionEdit() for m in lm_attention(halluc_model)}):  # identity edits
            assert torch.equal(halluc_model(**batch).logits, sdpa_model(**batch).logits)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_padding_reaches_the_edited_path(models, batch, impl):
    """An edit that only asks for outputs runs the kernel path; with the padding mask honoured it
    matches SDPA on the padded batch (and the column mass comes back through output_attentions)."""
    halluc_model, sdpa_model = models
    edits = {m: AttentionEdit(columns=batch["input_ids"] == IMAGE_ID, return_column_mass=True)
             for m in lm_attention(halluc_model)}
    with torch.no_grad(), use_impl(impl), active_edits(edits):
        out = halluc_model(**batch, output_attentions=True)
    ref = sdpa_model(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.logits[real], ref[real], atol=1e-5, rtol=1e-5)
    mass = out.attentions[0]
    assert mass.shape == (2, 4, batch["input_ids"].shape[1]) and ((mass >= 0) & (mass <= 1 + 1e-6)).all()
    assert all(e.record.impl == impl and e.record.calls == 1 for e in edits.values())


def test_edits_triton_equals_reference_in_generate(models, batch):
    halluc_model, sdpa_model = models
    results = {}
    for impl in ("torch", "triton"):
        rows = []
        edits = make_edits(halluc_model, batch, return_attention_row=True, return_column_mass=True,
                           on_output=lambda module, record, rows=rows: rows.append(record.attention_row))
        with torch.no_grad(), use_impl(impl), active_edits(edits):
            logits = halluc_model(**batch).logits
            gen = halluc_model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                                        output_scores=True, return_dict_in_generate=True)
        results[impl] = logits, gen, rows, [e.record.column_mass for e in edits.values()]
    (l_t, g_t, rows_t, mass_t), (l_k, g_k, rows_k, mass_k) = results["torch"], results["triton"]
    torch.testing.assert_close(l_k, l_t, atol=1e-4, rtol=1e-4)
    assert (l_t - sdpa_model(**batch).logits).abs().max() > 1e-2  # the edits do something
    assert torch.equal(g_k.sequences, g_t.sequences)
    for a, b in zip(g_k.scores, g_t.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    decode_rows = [r for r in rows_t if r is not None]  # only decode calls have a row
    assert len(decode_rows) == 2 * 2 and len(rows_t) == 2 * (1 + 1 + 2)  # 2 layers x (forward, prefill, 2 steps)
    for a, b in zip([r for r in rows_k if r is not None], decode_rows):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:2]), atol=1e-5, rtol=0)
    for a, b in zip(mass_k, mass_t):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_edits_are_gone_after_the_block_even_on_error(models, batch):
    halluc_model, sdpa_model = models
    edits = make_edits(halluc_model, batch)
    with pytest.raises(RuntimeError, match="boom"):
        with active_edits(edits):
            assert current_edits() == edits
            raise RuntimeError("boom")
    assert dict(current_edits()) == {}
    with torch.no_grad():
        assert torch.equal(halluc_model(**batch).logits, sdpa_model(**batch).logits)


def test_nested_blocks_merge_and_restore(models):
    a, b = lm_attention(models[0])
    ea, eb, eb2 = AttentionEdit(), AttentionEdit(), AttentionEdit()
    with active_edits({a: ea, b: eb}):
        with active_edits({b: eb2}):
            assert current_edits() == {a: ea, b: eb2}
        assert current_edits() == {a: ea, b: eb}
    assert dict(current_edits()) == {}


class VisionLikeAttention(nn.Module):
    """A non-causal attention module as the Qwen2-VL vision tower has (no layer_idx, keyword call)."""

    is_causal = False
    num_key_value_groups = 1
    training = False


def test_keyword_call_of_a_non_causal_module():
    mod = VisionLikeAttention()
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 4, 9, 8, generator=g) for _ in range(3))
    out, _ = halluc_attention(mod, q, k, v, attention_mask=None, scaling=0.3, dropout=0.0, is_causal=False)
    assert torch.equal(out, sdpa_attention_forward(mod, q, k, v, attention_mask=None, scaling=0.3, is_causal=False)[0])
    edit = AttentionEdit(column_bias=torch.randn(1, 9, generator=g))
    with active_edits({mod: edit}), use_impl("triton"):
        out, _ = halluc_attention(mod, q, k, v, attention_mask=None, scaling=0.3, is_causal=False)
    torch.testing.assert_close(out, attention_reference(q, k, v, None, scaling=0.3, edit=edit, is_causal=False).out)


def test_causal_call_without_mask_and_extra_keys_is_a_static_cache_prefill():
    """transformers' SDPA convention: no mask, 1 < Tq < Tk -> the keys past Tq are empty cache slots."""
    mod = VisionLikeAttention()
    mod.is_causal = True
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 2, 5, 8, generator=g)
    k, v = torch.randn(1, 2, 8, 8, generator=g), torch.randn(1, 2, 8, 8, generator=g)
    edit = AttentionEdit(column_bias=torch.zeros(1, 5))
    with active_edits({mod: edit}):
        out, _ = halluc_attention(mod, q, k, v, None, scaling=0.3)
    expected = sdpa_attention_forward(mod, q, k, v, None, scaling=0.3)[0]
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


# ---- sliding-window layers (Gemma 3): keys the cache dropped -----------------------------------
def attention_module(scaling: float) -> nn.Module:
    """A stand-in attention module: what the backend reads of one (causal) and a key for the edits."""
    module = nn.Module()
    module.is_causal, module.scaling = True, scaling
    return module


@pytest.mark.parametrize("padded", [False, True])
def test_evicted_keys_keep_the_edit_on_its_columns(padded):
    """A decode step of a sliding-window layer whose cache dropped its oldest keys gives what the same
    step gives over every key with the window as a mask: the edit's columns stay on their positions."""
    g = torch.Generator().manual_seed(0)
    b, h, hkv, d, prompt, window = 2, 4, 2, 16, 12, 6
    length = prompt + 3  # three tokens decoded after the prompt: positions 0..14, the query at 14
    q = torch.randn(b, h, 1, d, generator=g)
    k, v = torch.randn(b, hkv, length, d, generator=g), torch.randn(b, hkv, length, d, generator=g)
    image = torch.zeros(b, prompt, dtype=torch.bool)
    image[:, 9:12] = True  # the last image columns are still inside the window
    padding = torch.ones(b, length, dtype=torch.bool)
    if padded:
        padding[1, :2] = False
    visible = padding & (torch.arange(length) > length - 1 - window)  # the window (distance < window)
    module = attention_module(d ** -0.5)
    edit = AttentionEdit(columns=image, boost=ScoreBoost(0.7), head_bias=torch.tensor([0.5, 0.0, -0.3, 1.0]),
                         return_column_mass=True, return_attention_row=True)
    with active_edits({module: edit}):
        full, full_mass = halluc_attention(module, q, k, v, visible[:, None, None, :], scaling=module.scaling)
        full_row = edit.record.attention_row.clone()
        kept = window - 1 + 1  # the cache keeps window - 1 keys, plus this call's own
        edit.cached_positions = length - 1
        evicted, mass = halluc_attention(module, q, k[:, :, -kept:], v[:, :, -kept:],
                                         visible[:, None, None, -kept:], scaling=module.scaling)
    torch.testing.assert_close(evicted, full)
    torch.testing.assert_close(mass, full_mass)
    torch.testing.assert_close(edit.record.attention_row, full_row)  # a row over every position, dropped ones 0
    assert (edit.record.attention_row[..., :length - kept] == 0).all()


def test_evicted_keys_without_a_mask():
    """No padding: transformers passes no mask; the restored keys are masked all the same."""
    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(1, 2, 1, 8, generator=g), torch.randn(1, 2, 5, 8, generator=g), torch.randn(1, 2, 5, 8,
                                                                                                     generator=g)
    module = attention_module(8 ** -0.5)
    image = torch.zeros(1, 6, dtype=torch.bool)
    image[0, 3:6] = True
    edit = AttentionEdit(columns=image, boost=ScoreBoost(0.5), cached_positions=8)  # positions 4..8 in the window
    with active_edits({module: edit}):
        out, _ = halluc_attention(module, q, k, v, None, scaling=module.scaling)
    columns = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 5, dtype=torch.bool)], -1)
    padded_k = torch.cat([torch.zeros(1, 2, 4, 8), k], 2)
    padded_v = torch.cat([torch.zeros(1, 2, 4, 8), v], 2)
    expected = attention_reference(q, padded_k, padded_v, columns[:, None, None, :], scaling=module.scaling,
                                   edit=AttentionEdit(columns=image, boost=ScoreBoost(0.5))).out
    torch.testing.assert_close(out, expected)


def test_an_edit_that_only_reads_keeps_sdpa_and_gets_the_last_row(models, batch):
    halluc_model, sdpa_model = models
    rows = {}
    edits = {m: AttentionEdit(side_output=lambda row, v, i=i: rows.setdefault(i, []).append((row, v)))
             for i, m in enumerate(lm_attention(halluc_model))}
    with torch.no_grad(), active_edits(edits):
        logits = halluc_model(**batch).logits
    with torch.no_grad():
        assert torch.equal(logits, sdpa_model(**batch).logits)  # bit for bit: the attention ran on SDPA
    assert all(e.record.impl == "sdpa" and e.record.calls == 1 for e in edits.values())
    row, values = rows[0][0]
    assert row.shape == (2, 4, batch["input_ids"].shape[1]) and values.shape[1] == 4
    torch.testing.assert_close(row.sum(-1), torch.ones(2, 4))
    assert (row[1, :, :3] == 0).all()  # the padding of row 1 gets no attention


def test_a_column_bias_alone_runs_as_sdpa_with_a_float_mask_on_cpu(models, batch):
    halluc_model, _ = models
    image = batch["input_ids"] == IMAGE_ID
    bias = torch.zeros(image.shape).masked_fill(image & (torch.arange(image.shape[1]) % 3 == 0), float("-inf"))
    bias[:, -2] = 0.7  # a finite bias too
    outputs = {}
    for impl in ("auto", "torch-reference"):
        extra = {"score_mod": lambda s, w: s} if impl == "torch-reference" else {}  # a mod forces the reference
        edits = {m: AttentionEdit(columns=image, column_bias=bias, **extra) for m in lm_attention(halluc_model)}
        assert all(e.bias_only == (impl == "auto") for e in edits.values())
        with torch.no_grad(), active_edits(edits):
            outputs[impl] = halluc_model(**batch).logits
        assert all(e.record.impl == ("sdpa" if impl == "auto" else "torch") for e in edits.values())
    real = batch["attention_mask"].bool()  # padded query rows differ (SDPA attends somewhere, the reference to none)
    torch.testing.assert_close(outputs["auto"][real], outputs["torch-reference"][real], atol=1e-5, rtol=1e-5)


def test_a_null_key_alone_edits_the_prompt_rows_and_leaves_decode_on_sdpa(models, batch):
    """Prefill: the torch reference (CPU) with the null key; a call whose query sits past the null key's rows
    (a decode step) is plain SDPA, bit for bit."""
    halluc_model, sdpa_model = models
    t = batch["input_ids"].shape[1]
    edits = {m: AttentionEdit(null_logit=torch.zeros(2, 4, t)) for m in lm_attention(halluc_model)}
    with torch.no_grad(), active_edits(edits):
        out = halluc_model(**batch, use_cache=True)
    assert all(e.record.impl == "torch" for e in edits.values())
    with torch.no_grad():
        plain = sdpa_model(**batch, use_cache=True)
    assert not torch.allclose(out.logits[:, -1], plain.logits[:, -1], atol=1e-3)
    step = dict(input_ids=torch.tensor([[5], [5]]), attention_mask=torch.cat([batch["attention_mask"],
                                                                              torch.ones(2, 1, dtype=torch.long)], 1))
    with torch.no_grad(), active_edits(edits):  # the cache grows in place: give each call its own copy
        decoded = halluc_model(**step, cache=copy.deepcopy(plain.past_key_values)).logits
    assert all(e.record.impl == "sdpa" for e in edits.values())
    with torch.no_grad():
        assert torch.equal(decoded, sdpa_model(**step, cache=plain.past_key_values).logits)
