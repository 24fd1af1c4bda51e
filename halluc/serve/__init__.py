"""`halluc serve`: an OpenAI-compatible HTTP server whose requests choose their mitigation method.

A layer above the Python API (it imports `halluc.api` and the base modules only); the CLI's `halluc serve`
is a thin call into `serve`.
"""
from __future__ import annotations

from halluc.serve.app import create_app
from halluc.serve.options import ServeOptions
from halluc.serve.server import serve

__all__ = ["ServeOptions", "create_app", "serve"]
