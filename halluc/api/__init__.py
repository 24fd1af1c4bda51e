"""The Python API: everything the CLI does goes through here.

Light calls (benchmark files, scoring, reports) are imported at once; the model calls (`load`, `generate`,
`run`, ...) live in `halluc.api.core` and are imported on first use, so `halluc score` starts without torch.
"""
from __future__ import annotations

from halluc.api.files import (
    BenchmarkData,
    Report,
    ScoreCommand,
    ScoreTable,
    data_home,
    distinct_run_dirs,
    fetch,
    fetchable,
    load_plugins,
    render_terminal,
    report,
    score,
    score_commands,
    write_report,
)

_CORE = {"Decoding", "Generation", "LVLM", "RunOptions", "apply", "available_methods", "calibrate",
         "check_device_and_dtype", "check_generation", "check_model_name", "check_request", "control_methods",
         "generate", "generation", "load", "load_images", "make_methods", "methods", "models", "parse_shard",
         "plan_runs", "refusal", "run", "run_benchmarks", "support_matrix", "wrap"}

__all__ = ["BenchmarkData", "Decoding", "Generation", "LVLM", "Report", "RunOptions", "ScoreCommand", "ScoreTable",
           "apply", "available_methods", "calibrate", "check_device_and_dtype", "check_generation", "check_model_name",
           "check_request", "control_methods", "data_home", "distinct_run_dirs", "fetch", "fetchable", "generate",
           "generation", "load", "load_images", "load_plugins", "make_methods", "methods", "models", "parse_shard",
           "plan_runs", "refusal", "render_terminal", "report", "run", "run_benchmarks", "score", "score_commands",
           "support_matrix", "wrap", "write_report"]


def __getattr__(name: str):
    if name in _CORE:
        from halluc.api import core

        return getattr(core, name)
    raise AttributeError(f"module 'halluc.api' has no attribute '{name}'")
