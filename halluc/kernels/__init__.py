"""Attention with edits: the torch reference (the spec), the Triton kernel, the dispatcher between
them, and the "halluc" attention backend for transformers (`halluc.kernels.backend`).

Importing this package does not import triton.
"""
from halluc.kernels.dispatch import KERNEL_ENV, attention, resolve_impl, triton_available, use_impl
from halluc.kernels.edits import (
    AttentionEdit,
    AttentionRecord,
    AttentionResult,
    Redistribution,
    ScoreBoost,
    Where,
    pad_columns,
)
from halluc.kernels.masks import MaskNotSupported
from halluc.kernels.reference import attention_reference

__all__ = [
    "KERNEL_ENV", "AttentionEdit", "AttentionRecord", "AttentionResult", "MaskNotSupported", "Redistribution",
    "ScoreBoost", "Where", "attention", "attention_reference", "pad_columns", "resolve_impl", "triton_available",
    "use_impl",
]
