"""`halluc score BENCHMARK ...`: score saved outputs with the official rules. No model is loaded, and
nothing here imports torch.

One command per benchmark whose spec has a score entry (`BenchmarkSpec.score`): its options are the scorer's
parameters, it prints the benchmark's tables or, with --json, exactly one JSON object. Bad input: one line
on stderr, exit code 2.
"""
from __future__ import annotations

import functools
import inspect
import json
import typing

import typer
from rich.console import Console
from rich.table import Table

from halluc import api
from halluc.cli.common import OneLineUsageErrors
from halluc.errors import HallucError

score_app = typer.Typer(rich_markup_mode=None,
                        help="Score saved answers, captions or MME result files with the official rules.",
                        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _one_line_errors(fn):
    """HallucError / OSError -> `error: ...` on stderr and exit 2, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HallucError as err:
            message = str(err)
        except OSError as err:
            message = f"{err.filename}: {err.strerror}" if err.filename else str(err)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)
    return wrapper


def _command(name: str, command: api.ScoreCommand):
    """A typer command whose options are the scorer's keyword parameters, plus --json."""
    hints = typing.get_type_hints(command.run)

    def score(as_json: bool = False, **options):
        result = api.score(name, **options)
        if as_json:
            typer.echo(json.dumps(result))
            return
        for table in command.render(result, options, name):
            Console().print(_rich(table))

    parameters = [inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, annotation=_option_type(hints[p.name]),
                                    default=_option(p, command.help.get(p.name, "")))
                  for p in inspect.signature(command.run).parameters.values()]
    parameters.append(inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                        default=typer.Option(False, "--json", help="Print one JSON object instead "
                                                             "of a table.")))
    score.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]  # typeshed lacks inspect's hook
    score.__annotations__ = {p.name: p.annotation for p in parameters}
    score.__doc__ = command.summary
    return _one_line_errors(score)


def _option(parameter: inspect.Parameter, help_text: str):
    flag = "--" + parameter.name.replace("_", "-")
    required = parameter.default is inspect.Parameter.empty
    return typer.Option(... if required else parameter.default, flag, help=help_text)


def _option_type(hint):
    """`Path | None` -> Path: typer takes the plain type, the default says it is optional."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType")) else hint


def _rich(table: api.ScoreTable) -> Table:
    drawn = Table(title=table.title)
    for i, column in enumerate(table.columns):
        drawn.add_column(column, justify="left" if i == 0 else "right")
    for row in table.rows:
        drawn.add_row(*row)
    return drawn


for _name, _command_spec in api.score_commands().items():
    score_app.command(_name, cls=OneLineUsageErrors)(_command(_name, _command_spec))
