"""The mask-pattern check and its cache: verdicts live in a `MaskChecks` owned by the caller's scope
(one per `active_edits` block), never in a module global, and are right for every mask they see."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from halluc.kernels import AttentionEdit, use_impl
from halluc.kernels.backend import active_edits, current_mask_checks, halluc_attention
from halluc.kernels.masks import MaskChecks, MaskNotSupported, causal_mask, padding_columns

TQ, TK = 6, 10


def padded_mask(pad: int = 3) -> torch.Tensor:
    """(2, 1, Tq, Tk) causal & padding mask; batch row 1 is left-padded by `pad`."""
    keep = torch.ones(2, TK, dtype=torch.bool)
    keep[1, :pad] = False
    return (causal_mask(TQ, TK, "cpu")[None] & keep[:, None, :])[:, None]


def window_mask() -> torch.Tensor:
    """Same shape, not a padding pattern: a sliding window of 3 keys."""
    causal = causal_mask(TQ, TK, "cpu")
    return (causal & ~causal.tril(TK - TQ - 3))[None, None].expand(2, 1, TQ, TK).clone()


def test_two_masks_in_one_scope_are_each_judged():
    checks = MaskChecks()
    good, bad = padded_mask(), window_mask()
    assert torch.equal(padding_columns(good, TQ, TK, True, checks), good[:, 0, -1])
    with pytest.raises(MaskNotSupported):
        padding_columns(bad, TQ, TK, True, checks)
    assert len(checks) == 2
    padding_columns(good, TQ, TK, True, checks)  # a verdict already held: no new entry
    assert len(checks) == 2


def test_an_in_place_edit_is_judged_again():
    checks = MaskChecks()
    mask = padded_mask()
    padding_columns(mask, TQ, TK, True, checks)
    mask[0, 0, 1, 8] = True  # query 1 (key position 5) now sees key 8, in its future
    with pytest.raises(MaskNotSupported):
        padding_columns(mask, TQ, TK, True, checks)


def test_inference_tensors_are_checked_too():
    """Regression: the check read `_version`, which inference tensors (generate's masks) lack."""
    checks = MaskChecks()
    with torch.inference_mode():
        good, bad = padded_mask(), window_mask()
    assert padding_columns(good, TQ, TK, True, checks) is not None
    with pytest.raises(MaskNotSupported):
        padding_columns(bad, TQ, TK, True, checks)


def test_the_cache_is_bounded():
    checks = MaskChecks(size=2)
    masks = [padded_mask(pad) for pad in (1, 2, 3)]
    for mask in masks:
        padding_columns(mask, TQ, TK, True, checks)
    assert len(checks) == 2


class CausalAttention(nn.Module):
    is_causal = True
    num_key_value_groups = 1


def call(module, mask, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, 2, TQ, 8, generator=g), torch.randn(2, 2, TK, 8, generator=g), \
        torch.randn(2, 2, TK, 8, generator=g)
    halluc_attention(module, q, k, v, mask, scaling=0.3)


def test_each_block_has_its_own_checks_and_nothing_survives_it():
    pytest.importorskip("triton")
    module = CausalAttention()
    edit = AttentionEdit(column_bias=torch.zeros(2, TK))
    assert current_mask_checks() is None
    good, bad = padded_mask(), window_mask()
    with use_impl("triton"), active_edits({module: edit}):
        checks = weakref.ref(current_mask_checks())
        call(module, good)
        assert edit.record.impl == "triton"  # the padding pattern runs on the kernel
        call(module, bad)
        assert edit.record.impl == "torch"  # the window falls back to the reference
        call(module, good)
        assert edit.record.impl == "triton" and len(checks()) == 2
    assert current_mask_checks() is None
    gone = weakref.ref(bad)
    del bad
    gc.collect()
    assert checks() is None and gone() is None  # the block's cache is dropped and holds no mask
    with use_impl("triton"), active_edits({module: edit}):
        assert len(current_mask_checks()) == 0
        call(module, window_mask())  # a new mask, possibly at a freed mask's address: judged afresh
        assert edit.record.impl == "torch"


def test_inference_mode_masks_reach_the_kernel():
    """generate() runs under inference mode: its padded prefill masks must not crash the check."""
    pytest.importorskip("triton")
    module = CausalAttention()
    edit = AttentionEdit(column_bias=torch.zeros(2, TK))
    with torch.inference_mode(), use_impl("triton"), active_edits({module: edit}):
        call(module, padded_mask())
    assert edit.record.impl == "triton"
