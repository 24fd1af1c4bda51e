"""Choosing the implementation of attention-with-edits: the Triton kernel or the torch reference.

    attention(q, k, v, mask, scaling=..., edit=..., is_causal=..., impl=None) -> AttentionResult

Order of precedence for the implementation:
    1. the `impl` argument ("triton" | "torch" | "auto"),
    2. the innermost `use_impl(...)` block,
    3. the environment variable HALLUC_KERNEL=triton|torch|auto (read at each call),
    4. "auto": Triton for CUDA tensors when triton is installed, the reference otherwise.
Forcing "triton" on CPU tensors runs the kernel under Triton's interpreter (slow; for tests).
Edits with a plain-function part (`score_mod`, `prob_mod`) always run on the reference, and masks
the kernel cannot express (anything but causal & per-column padding) fall back to it;
`AttentionResult.impl` says which one ran. Triton is imported only when used, so the
package works without it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from halluc.kernels.edits import AttentionEdit, AttentionResult
from halluc.kernels.masks import MaskChecks, MaskNotSupported
from halluc.kernels.reference import attention_reference

KERNEL_ENV = "HALLUC_KERNEL"
IMPLS = ("auto", "triton", "torch")
_FORCED: ContextVar[str | None] = ContextVar("halluc_kernel_impl", default=None)


def triton_available() -> bool:
    """Whether triton is installed (it is not imported here)."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is not None
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def resolve_impl(device: torch.device | str, impl: str | None = None) -> str:
    """"triton" or "torch" for tensors on `device` (see the module docstring for the precedence)."""
    choice = impl or _FORCED.get() or os.environ.get(KERNEL_ENV) or "auto"
    if choice not in IMPLS:
        raise ValueError(f"{KERNEL_ENV}/impl must be one of {', '.join(IMPLS)}; got {choice!r}")
    if choice == "auto":
        return "triton" if torch.device(device).type == "cuda" and triton_available() else "torch"
    if choice == "triton" and not triton_available():
        raise ImportError("the Triton attention kernel was requested but triton is not installed")
    return choice


@contextlib.contextmanager
def use_impl(impl: str) -> Iterator[None]:
    """Force an implementation inside the block (takes precedence over HALLUC_KERNEL)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")
    token = _FORCED.set(impl)
    try:
        yield
    finally:
        _FORCED.reset(token)


def attention(query, key, value, attention_mask=None, *, scaling: float, edit: AttentionEdit | None = None,
              is_causal: bool = True, impl: str | None = None, mask_checks: MaskChecks | None = None
              ) -> AttentionResult:
    """Attention with `edit` applied. Shapes and semantics: `halluc.kernels.reference.attention_reference`.

    `mask_checks` caches the kernel's mask-pattern check for the caller's scope (`halluc.kernels.masks`).
    """
    if edit is not None and edit.has_mods:  # plain functions: only the reference can run them
        return attention_reference(query, key, value, attention_mask, scaling=scaling, edit=edit, is_causal=is_causal)
    if resolve_impl(query.device, impl) == "triton":
        from halluc.kernels.triton_attention import triton_attention  # lazy: triton is optional

        try:
            return triton_attention(query, key, value, attention_mask, scaling=scaling, edit=edit, is_causal=is_causal,
                                    mask_checks=mask_checks)
        except MaskNotSupported:
            pass
    return attention_reference(query, key, value, attention_mask, scaling=scaling, edit=edit, is_causal=is_causal)
