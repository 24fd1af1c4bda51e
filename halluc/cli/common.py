"""Shared CLI plumbing: one-line errors and free-form method parameters."""
from __future__ import annotations

import errno
import functools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer
import typer.core

if TYPE_CHECKING:  # typer vendors click privately; found at run time through BadParameter's bases
    from typer._click.exceptions import UsageError

from halluc.errors import HallucError

# storage failures a user fixes (space, permissions, read-only media): one line, not a traceback
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def friendly_errors(fn):
    """Bad input -> one line on stderr and exit code 2, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HallucError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except OSError as err:
            if err.errno not in STORAGE_ERRORS:
                raise
            where = f" {err.filename}" if err.filename else ""
            typer.echo(f"error: cannot write{where}: {err.strerror}", err=True)
            raise typer.Exit(2) from None
    return wrapper


class OneLineUsageErrors(typer.core.TyperCommand):
    """A command whose bad options and arguments (`--bootstrap -5`, `--bootstrap x`) are one line on stderr and
    exit code 2, like every other bad input, instead of click's usage box."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except _USAGE_ERROR as err:
            typer.echo(f"error: {err.format_message()}", err=True)
            raise typer.Exit(2) from None


# click's UsageError, which typer either depends on or vendors: found through the class typer exports
_USAGE_ERROR = cast("type[UsageError]", next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"))


def parse_value(text: str):
    """'2' -> 2, '0.5' -> 0.5, 'true' -> True, anything else stays a string. 'nan', 'inf' and '1e999' read as the
    floats the Python API would get, so the method's own check refuses them with the same line."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return float(text) if lowered.strip().lstrip("+-") in ("nan", "inf", "infinity") else text
    except ValueError:
        return text


def parse_method_params(extra: list[str], pairs: list[str]) -> dict:
    """Method parameters from `--alpha 2 --vcd.beta=0.1` leftovers and `--param alpha=2` pairs."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HallucError(f"--param expects NAME=VALUE, got '{pair}'")
        params[key.replace("-", "_")] = parse_value(value)
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or len(token) == 2:
            raise HallucError(f"unexpected argument '{token}'")
        key, sep, value = token[2:].partition("=")
        if not sep:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise HallucError(f"method parameter '--{key}' needs a value")
            value, i = extra[i + 1], i + 1
        params[key.replace("-", "_")] = parse_value(value)
        i += 1
    return params


def check_out_dir(out: Path) -> None:
    """One clear line when `--out` cannot be a directory halluc writes into (a file, or not writable)."""
    out = Path(out)
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise HallucError(f"--out {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK):
        raise HallucError(f"--out {out}: {existing} is not writable")


def stderr(message: str) -> None:
    print(message, file=sys.stderr)
