"""Write the command examples of the README and the docs from real runs: each block between `<!-- example -->` and
`<!-- /example -->` holds `$ halluc ...` lines, each followed by what that command prints (stdout and
stderr together, as a terminal shows them). Only the commands are typed by hand.

    python tools/readme_examples.py           # print every block as its commands print it now
    python tools/readme_examples.py --write   # rewrite the blocks in README.md and docs/*.md
    python tools/readme_examples.py --check   # exit 1 when a page is out of date (the test suite does this)

Commands run in-process through the `halluc` command's app, from the repository root, in a 100-column
terminal with no progress display. A command ending in " \\" continues on the next line. A printed line
longer than 110 characters is cut at the last ", " (else space) before that width and ends in "...":
that shortening is the only difference from the real output.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))



def pages() -> list[Path]:
    """The pages that may hold example blocks: README.md, then docs/*.md."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


PAGES = pages  # tests point it at copies
BLOCK = re.compile(r"(<!-- example -->\n```\n)(?P<body>.*?)(```\n<!-- /example -->)", re.S)
WIDTH = 110
ENV = {"HALLUC_PROGRESS": "0", "COLUMNS": "100", "NO_COLOR": "1"}


@dataclass(frozen=True)
class Example:
    command: str            # as written on the page, continuation lines included
    output: str             # what it printed, shortened to WIDTH
    exit_code: int

    def render(self) -> str:
        return self.command + "\n" + (self.output + "\n" if self.output else "")


def commands(body: str) -> list[str]:
    """The `$ halluc ...` commands of a block (with their continuation lines); output lines are ignored."""
    found, lines = [], iter(body.splitlines())
    for line in lines:
        if not line.startswith("$ "):
            continue
        command = [line]
        while command[-1].endswith(" \\"):
            command.append(next(lines))
        found.append("\n".join(command))
    return found


def run(command: str) -> Example:
    """Run one documented command through the `halluc` app and capture what it prints."""
    from typer.testing import CliRunner

    from halluc.cli import app

    words = shlex.split(command.removeprefix("$ ").replace("\\\n", " "))
    if words[:1] != ["halluc"]:
        raise SystemExit(f"example '{command}': only `halluc ...` commands can be run")
    with in_repository():
        result = CliRunner().invoke(app, words[1:], env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise SystemExit(f"example '{command}' raised {result.exception!r}")
    output = "\n".join(shorten(line.rstrip()) for line in result.output.rstrip("\n").splitlines())
    return Example(command, output, result.exit_code)


@contextlib.contextmanager
def in_repository():
    """Run from the repository root, where the README's relative paths (`../shared/data`) start."""
    previous = os.getcwd()
    os.chdir(REPO)
    try:
        yield
    finally:
        os.chdir(previous)


def shorten(line: str, width: int = WIDTH) -> str:
    if len(line) <= width:
        return line
    head = line[: width - 3]
    cut = head.rfind(", ")
    return (head[: cut + 2] if cut > 0 else head[: head.rfind(" ") + 1]) + "..."


def blocks(text: str) -> list[str]:
    return [match.group("body") for match in BLOCK.finditer(text)]


def run_block(body: str) -> list[Example]:
    return [run(command) for command in commands(body)]


def render_block(body: str) -> str:
    return "".join(example.render() for example in run_block(body))


def render(text: str) -> str:
    """`text` with every example block replaced by what its commands print now."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group("body")) + m.group(3), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the blocks in README.md and docs/")
    mode.add_argument("--check", action="store_true", help="exit 1 when a page is out of date")
    args = parser.parse_args(argv)
    with_blocks = [(path, path.read_text()) for path in PAGES()]
    with_blocks = [(path, text) for path, text in with_blocks if blocks(text)]
    if not (args.write or args.check):
        for _, text in with_blocks:
            for body in blocks(text):
                print(render_block(body))
        return 0
    stale = {path: rendered for path, text in with_blocks if (rendered := render(text)) != text}
    if args.write:
        for path, rendered in stale.items():
            path.write_text(rendered)
    elif stale:
        print(f"{', '.join(p.name for p in stale)}: examples out of date: run `python tools/readme_examples.py "
              "--write`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
