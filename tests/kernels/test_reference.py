"""The torch reference is the spec: plain attention equals SDPA, and each primitive matches its formula
on hand-made tensors (score boost, head/column bias, redistribution, column mass, attention row)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from halluc.kernels import AttentionEdit, Redistribution, ScoreBoost, attention_reference, pad_columns
from halluc.kernels.masks import MaskNotSupported, causal_mask, padding_columns


def qkv(b, h, hkv, tq, tk, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, tq, d, generator=g, dtype=dtype), torch.randn(b, hkv, tk, d, generator=g, dtype=dtype),
            torch.randn(b, hkv, tk, d, generator=g, dtype=dtype))


def sdpa(q, k, v, mask=None, causal=False):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
    return out.transpose(1, 2)


def probs_edit(probs: list[float], **kw) -> tuple:
    """One query row whose softmax is exactly `probs` (q = 0, column bias = log probs) and v = I,
    so the output row *is* the final attention row."""
    tk = len(probs)
    q, k = torch.zeros(1, 1, 1, tk), torch.zeros(1, 1, tk, tk)
    v = torch.eye(tk)[None, None]
    edit = AttentionEdit(column_bias=torch.tensor(probs).log()[None], **kw)
    return q, k, v, edit


# ---- no edit == SDPA ------------------------------------------------------------------------
@pytest.mark.parametrize("b,h,hkv,tq,tk,d", [(2, 4, 4, 9, 9, 16), (1, 4, 2, 1, 30, 8), (2, 6, 2, 13, 13, 32)],
                         ids=["prefill", "decode-gqa", "prefill-gqa"])
def test_plain_attention_equals_sdpa(b, h, hkv, tq, tk, d):
    q, k, v = qkv(b, h, hkv, tq, tk, d)
    ref = attention_reference(q, k, v, None, scaling=d ** -0.5, is_causal=True)
    torch.testing.assert_close(ref.out, sdpa(q, k, v, causal=tq > 1), atol=1e-5, rtol=1e-5)
    assert ref.column_mass is None and ref.attention_row is None and ref.impl == "torch"


def test_chunked_prefill_is_bottom_right_causal():
    q, k, v = qkv(1, 2, 2, 5, 12, 8)
    mask = causal_mask(5, 12, "cpu")  # query i at key position 7 + i
    assert mask[0].sum() == 8 and mask[-1].all()
    ref = attention_reference(q, k, v, None, scaling=8 ** -0.5)
    torch.testing.assert_close(ref.out, sdpa(q, k, v, mask[None, None]), atol=1e-5, rtol=1e-5)


def test_padding_mask_bool_and_float_and_fully_masked_rows():
    q, k, v = qkv(2, 2, 1, 10, 10, 8)
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[1, :4] = False  # left padding of row 1
    mask = (causal_mask(10, 10, "cpu")[None] & keep[:, None, :])[:, None]  # (B, 1, Tq, Tk)
    ref = attention_reference(q, k, v, mask, scaling=8 ** -0.5)
    valid = mask.any(-1)[:, 0]  # (B, Tq): rows with at least one key
    torch.testing.assert_close(ref.out[valid], sdpa(q, k, v, mask)[valid], atol=1e-5, rtol=1e-5)
    assert torch.equal(ref.out[~valid], torch.zeros_like(ref.out[~valid]))  # pad query rows: 0, not NaN
    additive = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(attention_reference(q, k, v, additive, scaling=8 ** -0.5).out, ref.out)


def test_padding_vector_from_mask():
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[1, :3] = False
    mask = (causal_mask(6, 10, "cpu")[None] & keep[:, None, :])[:, None]
    assert torch.equal(padding_columns(mask, 6, 10, True), keep)
    assert padding_columns(None, 6, 10, True) is None
    odd = mask.clone()
    odd[0, 0, 2, 1] = ~odd[0, 0, 2, 1]
    with pytest.raises(MaskNotSupported):
        padding_columns(odd, 6, 10, True)
    with pytest.raises(MaskNotSupported):
        padding_columns(mask.float(), 6, 10, True)


def test_identity_values_change_nothing():
    q, k, v = qkv(1, 2, 2, 6, 6, 8)
    img = torch.zeros(1, 6, dtype=torch.bool)
    img[:, 1:4] = True
    ident = AttentionEdit(columns=img, column_bias=torch.zeros(1, 6), head_bias=torch.zeros(2), boost=ScoreBoost(0.0),
                          redistribute=Redistribution(img & False, keep=1.0))
    assert not ident.has_redistribution and not ident.has_boost
    plain = attention_reference(q, k, v, None, scaling=0.3).out
    assert torch.equal(attention_reference(q, k, v, None, scaling=0.3, edit=ident).out, plain)


# ---- score boost (PAI) ----------------------------------------------------------------------
def test_boost_formula():
    # D = 1 so the scores are q * k; v = I so the output rows are the attention rows.
    q = torch.tensor([1.0, 2.0]).view(1, 1, 2, 1)
    k = torch.tensor([1.0, -1.0, 2.0]).view(1, 1, 3, 1)
    v = torch.eye(3).view(1, 1, 3, 3)
    img = torch.tensor([[False, True, True]])
    edit = AttentionEdit(columns=img, boost=ScoreBoost(0.5))  # last row only
    out = attention_reference(q, k, v, None, scaling=1.0, edit=edit).out[0, :, 0]  # (Tq, Tk)
    # row 0 sits at key position 1: scores [1, -1], untouched; row 1: [2, -2, 4] -> [2, -2 + 1, 4 + 2]
    torch.testing.assert_close(out[0], torch.tensor([1.0, -1.0, -math.inf]).softmax(-1))
    torch.testing.assert_close(out[1], torch.tensor([2.0, -1.0, 6.0]).softmax(-1))
    every_row = attention_reference(q, k, v, None, scaling=1.0,
                                    edit=AttentionEdit(columns=img, boost=ScoreBoost(0.5, last_row_only=False)))
    # row 0, column 1 (in the set): -1 + 0.5 * |-1|
    torch.testing.assert_close(every_row.out[0, 0, 0], torch.tensor([1.0, -0.5, -math.inf]).softmax(-1))
    per_column = AttentionEdit(boost=ScoreBoost(img.float() * 0.5))  # the PAINT-style tensor form
    torch.testing.assert_close(attention_reference(q, k, v, None, scaling=1.0, edit=per_column).out,
                               attention_reference(q, k, v, None, scaling=1.0, edit=edit).out)


# ---- biases ---------------------------------------------------------------------------------
def test_head_bias_scales_the_column_sets_attention_in_that_head():
    probs = [0.1, 0.2, 0.3, 0.4]
    q, k, v, edit = probs_edit(probs)
    img = torch.tensor([[False, True, True, False]])
    base = attention_reference(q, k, v, None, scaling=1.0, edit=edit).out[0, 0, 0]
    edit.columns, edit.head_bias = img, torch.tensor([math.log(3.0)])
    got = attention_reference(q, k, v, None, scaling=1.0, edit=edit).out[0, 0, 0]
    expected = torch.tensor([0.1, 0.6, 0.9, 0.4]) / 2.0
    torch.testing.assert_close(base, torch.tensor(probs))
    torch.testing.assert_close(got, expected)


def test_minus_inf_column_bias_removes_the_key():
    q, k, v = qkv(1, 2, 2, 1, 7, 8)
    bias = torch.zeros(1, 7)
    bias[0, 3] = float("-inf")
    got = attention_reference(q, k, v, None, scaling=0.5, edit=AttentionEdit(column_bias=bias)).out
    keep = [0, 1, 2, 4, 5, 6]
    torch.testing.assert_close(got, attention_reference(q, k[:, :, keep], v[:, :, keep], None, scaling=0.5).out)


def test_columns_cover_the_prompt_and_generated_keys_are_text():
    padded = pad_columns(torch.tensor([[True, False]]), 4, False)
    assert torch.equal(padded, torch.tensor([[True, False, False, False]]))
    q, k, v = qkv(1, 1, 1, 1, 6, 4)
    short = AttentionEdit(column_bias=torch.tensor([[0.5, -1.0, 2.0]]))
    full = AttentionEdit(column_bias=torch.tensor([[0.5, -1.0, 2.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(attention_reference(q, k, v, None, scaling=1.0, edit=short).out,
                               attention_reference(q, k, v, None, scaling=1.0, edit=full).out)
    with pytest.raises(ValueError, match="covers 8 keys"):
        attention_reference(q, k, v, None, scaling=1.0, edit=AttentionEdit(column_bias=torch.zeros(1, 8)))


# ---- redistribution (VAR) -------------------------------------------------------------------
# columns: 0 source outside the set (BOS) | 1 source in the set | 2, 3, 4 in the set | 5 neither
SOURCES = torch.tensor([[True, True, False, False, False, False]])
COLUMNS = torch.tensor([[False, True, True, True, True, False]])


def test_redistribution_formula():
    probs = [0.3, 0.1, 0.2, 0.2, 0.1, 0.1]
    q, k, v, edit = probs_edit(probs, columns=COLUMNS, redistribute=Redistribution(SOURCES, keep=0.6),
                               return_column_mass=True, return_attention_row=True)
    res = attention_reference(q, k, v, None, scaling=1.0, edit=edit)
    row = res.out[0, 0, 0]
    # selected: mass on the set 0.6 >= 0.2 and its sources' share 0.1 / 0.6 <= 0.5
    source_mass = 0.3 + 0.1
    moved = (1 - 0.6) * source_mass  # 0.16 goes to columns 2, 3, 4 in proportion 0.2 : 0.2 : 0.1
    expected = torch.tensor([0.3 * 0.6, 0.1 * 0.6, 0.2 + moved * 0.4, 0.2 + moved * 0.4, 0.1 + moved * 0.2, 0.1])
    torch.testing.assert_close(row, expected)
    torch.testing.assert_close(row.sum(), torch.tensor(1.0))  # row sums preserved
    torch.testing.assert_close(torch.tensor(probs)[:2].sum() - row[:2].sum(), torch.tensor(moved))
    torch.testing.assert_close(res.attention_row[0, 0], expected)
    torch.testing.assert_close(res.column_mass[0, 0, 0], expected[1:5].sum())


@pytest.mark.parametrize("probs,why", [([0.3, 0.35, 0.1, 0.1, 0.05, 0.1], "source share 0.35/0.6 > 0.5"),
                                       ([0.8, 0.05, 0.05, 0.0, 0.0, 0.1], "mass on the set 0.1 < 0.2")])
def test_redistribution_leaves_unselected_rows_alone(probs, why):
    probs = torch.tensor(probs).clamp_min(1e-12)
    q, k, v, edit = probs_edit(probs.tolist(), columns=COLUMNS, redistribute=Redistribution(SOURCES))
    got = attention_reference(q, k, v, None, scaling=1.0, edit=edit).out[0, 0, 0]
    torch.testing.assert_close(got, probs / probs.sum())


def test_redistribution_in_prefill_rows_after_the_column_set_only():
    q, k, v = qkv(1, 2, 2, 8, 8, 4, seed=3)
    img = torch.zeros(1, 8, dtype=torch.bool)
    img[0, 1:5] = True
    sinks = torch.zeros_like(img)
    sinks[0, 0] = True
    edit = AttentionEdit(columns=img, redistribute=Redistribution(sinks, max_source_share=1.0, min_mass=0.0))
    plain = attention_reference(q, k, v, None, scaling=0.5).out
    got = attention_reference(q, k, v, None, scaling=0.5, edit=edit).out
    assert torch.equal(got[:, :5], plain[:, :5])  # rows up to the set's last column: untouched
    assert (got[:, 5:] - plain[:, 5:]).abs().amin() > 0  # rows after it: redistributed
    edit.redistribute = dataclasses.replace(edit.redistribute, query_start=7)  # a new object: the cache sees it
    got = attention_reference(q, k, v, None, scaling=0.5, edit=edit).out
    assert torch.equal(got[:, :7], plain[:, :7]) and not torch.equal(got[:, 7], plain[:, 7])


def test_column_mass_and_attention_row():
    q, k, v = qkv(2, 3, 3, 1, 9, 8, seed=5)
    img = torch.zeros(2, 6, dtype=torch.bool)  # over the prompt; keys 6..8 were generated
    img[:, 2:5] = True
    edit = AttentionEdit(columns=img, return_column_mass=True, return_attention_row=True)
    res = attention_reference(q, k, v, None, scaling=0.4, edit=edit)
    probs = ((q @ k.transpose(-1, -2)) * 0.4).softmax(-1)[:, :, 0]  # (B, H, Tk)
    torch.testing.assert_close(res.attention_row, probs)
    torch.testing.assert_close(res.column_mass[..., 0], probs[..., 2:5].sum(-1))
    q2, k2, v2 = qkv(2, 3, 3, 4, 9, 8)
    assert attention_reference(q2, k2, v2, None, scaling=0.4, edit=edit).attention_row is None  # decode only


def test_edit_validation():
    with pytest.raises(ValueError, match="keep"):
        Redistribution(torch.ones(1, 4, dtype=torch.bool), keep=1.5)
    with pytest.raises(ValueError, match="strength"):
        ScoreBoost(-0.1)
    q, k, v = qkv(1, 2, 2, 1, 4, 4)
    everything = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="head_bias"):
        attention_reference(q, k, v, None, scaling=1.0,
                            edit=AttentionEdit(columns=everything, head_bias=torch.zeros(3)))
    for needs_columns in (AttentionEdit(redistribute=Redistribution(everything)), AttentionEdit(boost=ScoreBoost(0.5)),
                          AttentionEdit(head_bias=torch.zeros(2))):
        with pytest.raises(ValueError, match="need columns"):
            attention_reference(q, k, v, None, scaling=1.0, edit=needs_columns)


def test_edit_column_cache_sees_replaced_and_inference_tensors():
    """Regression: the column cache keyed on ids returned stale columns after a field was replaced,
    and read `_version`, which inference-mode tensors do not have."""
    from halluc.kernels.edits import AttentionEdit

    edit = AttentionEdit(boost=ScoreBoost(0.5))
    edit.columns = torch.zeros(1, 4, dtype=torch.bool)
    edit.column_tensors(1, 2, torch.device("cpu"))
    edit.columns = None
    edit.columns = torch.ones(1, 4, dtype=torch.bool)
    assert edit.column_tensors(1, 2, torch.device("cpu")).columns.all()
    edit.boost = ScoreBoost(0.25)  # a replaced primitive is seen too
    assert edit.column_tensors(1, 2, torch.device("cpu")).boost.eq(0.25).all()
    with torch.inference_mode():
        fresh = AttentionEdit(columns=torch.ones(1, 4, dtype=torch.bool), boost=ScoreBoost(0.2))
        assert fresh.column_tensors(2, 2, torch.device("cpu")).boost.shape == (2, 4)


# ---- the escape hatch: score_mod / prob_mod ----------------------------------------------------
def test_score_mod_adding_a_column_bias_equals_the_primitive():
    q, k, v = qkv(2, 3, 3, 4, 9, 8, seed=7)  # a chunk: queries at key positions 5..8
    bias = torch.randn(2, 7, generator=torch.Generator().manual_seed(8))  # over a 7-column prompt
    full = pad_columns(bias, 9, 0.0)  # (B, Tk)
    mod = AttentionEdit(score_mod=lambda s, w: s + full[w.batch, w.key])  # (B, 1, 1, Tk) through the indices
    got = attention_reference(q, k, v, None, scaling=0.4, edit=mod)
    ref = attention_reference(q, k, v, None, scaling=0.4, edit=AttentionEdit(column_bias=bias))
    assert torch.equal(got.out, ref.out)


def test_identity_prob_mod_changes_nothing():
    q, k, v = qkv(1, 2, 2, 1, 6, 8, seed=9)
    fields = dict(columns=COLUMNS, boost=ScoreBoost(0.5), head_bias=torch.tensor([0.3, -0.2]),
                  redistribute=Redistribution(SOURCES, max_source_share=1.0, min_mass=0.0),
                  return_column_mass=True, return_attention_row=True)
    plain = attention_reference(q, k, v, None, scaling=0.5, edit=AttentionEdit(**fields))
    same = attention_reference(q, k, v, None, scaling=0.5, edit=AttentionEdit(prob_mod=lambda a, w: a, **fields))
    for a, b in zip(plain[:3], same[:3]):
        assert torch.equal(a, b)


def test_score_mod_on_heads_and_columns_matches_the_hand_computation():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    q, k, v = torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 4, 4), torch.eye(4).expand(1, 2, 4, 4)  # output = row
    columns = torch.tensor([[False, True, True, False]])

    def scale_head_1(s, w):  # the column set's attention in head 1, times 3
        return s + torch.where(w.columns & (w.head == 1), math.log(3.0), 0.0)

    edit = AttentionEdit(columns=columns, column_bias=probs.log()[None], score_mod=scale_head_1)
    rows = attention_reference(q, k, v, None, scaling=1.0, edit=edit).out[0, 0]  # (H, Tk)
    torch.testing.assert_close(rows[0], probs)  # head 0 untouched
    torch.testing.assert_close(rows[1], torch.tensor([0.1, 0.6, 0.9, 0.4]) / 2.0)  # head 1: set x3, renormalised


def test_where_gives_absolute_query_positions_and_running_rows():
    q, k, v = qkv(4, 2, 2, 5, 12, 8, seed=11)  # 2 samples x 2 beams; queries at key positions 7..11
    seen = []

    def window(s, w):  # a sliding window of 3 keys, written with the query positions
        seen.append(w)
        return s.masked_fill(w.key < w.query - 2, float("-inf"))

    columns = torch.tensor([[True, False, False], [False, True, True]])  # per sample, over a 3-column prompt
    got = attention_reference(q, k, v, None, scaling=0.3, edit=AttentionEdit(columns=columns, score_mod=window)).out
    causal = causal_mask(5, 12, "cpu")
    mask = (causal & ~causal.tril(12 - 5 - 3))[None, None]
    torch.testing.assert_close(got, attention_reference(q, k, v, mask, scaling=0.3).out)
    w = seen[0]
    assert [tuple(t.shape) for t in w] == [(4, 1, 1, 1), (1, 2, 1, 1), (1, 1, 5, 1), (1, 1, 1, 12), (4, 1, 1, 12)]
    assert w.query.flatten().tolist() == [7, 8, 9, 10, 11]
    rows = w.columns[:, 0, 0, :4].tolist()  # each sample's row repeated per beam, False past the prompt
    assert rows == [[True, False, False, False]] * 2 + [[False, True, True, False]] * 2


def test_mods_are_checked_and_switch_the_edit_on():
    q, k, v = qkv(1, 2, 2, 3, 3, 4)
    assert not AttentionEdit(score_mod=lambda s, w: s).is_noop() and AttentionEdit(prob_mod=lambda a, w: a).has_mods
    with pytest.raises(ValueError, match="must return a"):
        attention_reference(q, k, v, None, scaling=1.0, edit=AttentionEdit(score_mod=lambda s, w: s[..., :2]))


def test_side_output_sees_the_last_final_row_and_the_grouped_values():
    q, k, v = qkv(2, 4, 2, 3, 7, 8, seed=12)  # GQA: query heads 0, 1 read KV head 0; 2, 3 read KV head 1
    seen = {}

    def side(row, values):  # (B, H, Tk) last query's probabilities, (B, H, Tk, D) values
        seen.update(row=row, values=values)
        return (row[:, :, None] @ values[..., :1])[:, :, 0]  # (B, H, 1)

    plain = attention_reference(q, k, v, None, scaling=0.3)
    got = attention_reference(q, k, v, None, scaling=0.3, edit=AttentionEdit(side_output=side))
    assert torch.equal(got.out, plain.out)  # a side output changes nothing in the attention
    assert torch.equal(seen["values"], v.repeat_interleave(2, dim=1))
    # the last output row of each head is its attention row times its values: the row is the final one
    torch.testing.assert_close((seen["row"][:, :, None] @ seen["values"])[:, :, 0], plain.out[:, -1])
    assert got.side_output.shape == (2, 4, 1)
    edit = AttentionEdit(side_output=lambda a, values: None)
    assert edit.has_mods and not edit.is_noop() and edit.reads_only
    assert not AttentionEdit(side_output=side, column_bias=torch.zeros(1, 7)).reads_only


@pytest.mark.parametrize("tq,tk,padded", [(3, 7, False), (1, 9, True), (5, 5, True)],
                         ids=["chunk", "decode-padded", "prefill-padded"])
def test_side_output_computed_alone_equals_the_references_last_row(tq, tk, padded):
    from halluc.kernels.reference import side_output

    q, k, v = qkv(2, 4, 2, tq, tk, 8, seed=14)
    mask = None
    if padded:
        keep = torch.ones(2, tk, dtype=torch.bool)
        keep[1, :2] = False
        mask = (causal_mask(tq, tk, "cpu")[None] & keep[:, None, :])[:, None]
    rows = []
    edit = AttentionEdit(side_output=lambda row, values: rows.append(row))
    attention_reference(q, k, v, mask, scaling=0.4, edit=edit)
    side_output(q, k, v, mask, scaling=0.4, edit=edit)
    torch.testing.assert_close(rows[1], rows[0], atol=1e-6, rtol=1e-6)
    if padded:
        assert (rows[1][1, :, :2] == 0).all()


@pytest.mark.parametrize("padded", [False, True])
def test_a_reading_decode_call_gives_the_plain_output_and_the_side_row_from_one_row(padded):
    from halluc.kernels.reference import attention_reading

    q, k, v = qkv(2, 4, 2, 1, 9, 8, seed=15)
    mask = None
    if padded:
        mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
        mask[1, ..., :3] = False
    rows = []
    edit = AttentionEdit(side_output=lambda row, values: rows.append(row) or "side")
    plain = attention_reference(q, k, v, mask, scaling=0.4, edit=edit)
    got = attention_reading(q, k, v, mask, scaling=0.4, edit=edit)
    torch.testing.assert_close(got.out, plain.out, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rows[1], rows[0], atol=1e-6, rtol=1e-6)
    assert got.side_output == "side" and got.impl == "torch" and got.out.shape == (2, 1, 4, 8)


@pytest.mark.parametrize("h,hkv", [(4, 4), (6, 2), (4, 1)])
def test_kv_heads_are_expanded_like_repeat_interleave(h, hkv):
    from halluc.kernels.reference import expand_kv_heads

    _, k, _ = qkv(2, h, hkv, 1, 5, 3, seed=13)
    assert torch.equal(expand_kv_heads(k, h), k.repeat_interleave(h // hkv, dim=1))


# ---- null key ----------------------------------------------------------------------------------
@pytest.mark.parametrize("tq,tk,tn", [(9, 9, 9), (4, 12, 10), (1, 12, 12), (1, 12, 11)],
                         ids=["prefill", "chunk-past-the-prompt", "decode-with-null", "decode-past-the-prompt"])
def test_null_key_is_an_extra_key_with_value_zero(tq, tk, tn):
    """softmax over [q·kᵀ·scale (causal), n_i], the null column dropped: rows sum to 1 − its share, and
    the output is the plain output times that sum; queries at key positions >= Tn are plain."""
    q, k, v = qkv(2, 4, 2, tq, tk, 8)
    null = torch.randn(2, 4, tn) * 2
    null[0, 1, ::3] = float("-inf")
    got = attention_reference(q, k, v, scaling=0.3, edit=AttentionEdit(null_logit=null, return_column_mass=True,
                                                                       columns=torch.ones(2, tk, dtype=torch.bool)))
    keys, values = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    s = (q @ keys.transpose(-1, -2) * 0.3).masked_fill(~causal_mask(tq, tk, "cpu"), float("-inf"))
    n = torch.full((2, 4, tk), float("-inf"))
    n[..., :tn] = null
    a = torch.cat([s, n[..., tk - tq:, None]], -1).softmax(-1)[..., :tk]  # (B, H, Tq, Tk)
    torch.testing.assert_close(got.out, (a @ values).transpose(1, 2))
    torch.testing.assert_close(got.column_mass, a.sum(-1))  # every column in the set: the row's sum
    plain = attention_reference(q, k, v, scaling=0.3).out
    past = torch.arange(tk - tq, tk) >= tn
    torch.testing.assert_close(got.out[:, past], plain[:, past])
    if (~past).any():
        assert (got.column_mass[..., ~past] < 1).any() and not torch.allclose(got.out[:, ~past], plain[:, ~past])


def test_null_key_switches_the_edit_on_and_is_checked():
    q, k, v = qkv(1, 2, 2, 5, 5, 4)
    edit = AttentionEdit(null_logit=torch.zeros(1, 2, 5))
    assert not edit.is_noop() and edit.null_only and not edit.bias_only and not edit.reads_only
    assert edit.null_reaches(5, 5) and edit.null_reaches(1, 5) and not edit.null_reaches(1, 6)
    assert not AttentionEdit(null_logit=torch.zeros(1, 2, 5), column_bias=torch.zeros(1, 5)).null_only
    minus_inf = AttentionEdit(null_logit=torch.full((1, 2, 5), float("-inf")))  # no null key anywhere: plain
    torch.testing.assert_close(attention_reference(q, k, v, scaling=0.5, edit=minus_inf).out,
                               attention_reference(q, k, v, scaling=0.5).out)
    with pytest.raises(ValueError, match="null_logit must be"):
        attention_reference(q, k, v, scaling=0.5, edit=AttentionEdit(null_logit=torch.zeros(1, 3, 5)))
