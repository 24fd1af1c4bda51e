"""Write the README's generated tables from the registry: the supported-model families and the
method x family support matrix. Nothing in these sections is typed by hand.

    python tools/readme_tables.py           # print both sections
    python tools/readme_tables.py --write   # rewrite them in README.md
    python tools/readme_tables.py --check   # exit 1 when README.md is out of date (the test suite does this)

Each section sits between `<!-- generated: NAME -->` and `<!-- /generated -->` markers; the text around
them is left alone.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from halluc import api  # noqa: E402
from halluc.modeling.generic import GENERIC  # noqa: E402
from halluc.modeling.registry import families  # noqa: E402

README = REPO / "README.md"
MARKER = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)


def families_table() -> str:
    """One row per family record: title, HF model types, aliases with hub ids, offline tiny model, notes."""
    lines = ["| family | model types | aliases (hub id) | offline model | adapter notes |", "|---|---|---|---|---|"]
    for f in families():
        aliases = ", ".join(f"`{c.alias}` ({c.hub_id})" for c in f.checkpoints)
        types = ", ".join(f"`{t}`" for t in f.model_types)
        lines.append(f"| {f.title} | {types} | {aliases} | `{f.tiny_name}` | {f.notes} |")
    lines.append(f"| any other LVLM (`halluc.wrap`) | — | — | — | the generic adapter: image positions from the "
                 f"config's image token id, no 2-D grid, no vision CLS (family `{GENERIC}:<model_type>`) |")
    return "\n".join(lines) + "\n"


def support_table() -> str:
    """Method x family at each method's default parameters: ✓, or why `check_compatible` refuses it."""
    rows = api.support_matrix()
    targets = list(dict.fromkeys(r["family"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["family"]): "✓" if r["reason"] is None else r["short"] for r in rows}
    lines = ["| method | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    lines += [f"| `{m}` | " + " | ".join(cell[m, t] for t in targets) + " |" for m in methods]
    return "\n".join(lines) + "\n"


SECTIONS = {"families": families_table, "support": support_table}


def render(text: str) -> str:
    """`text` with every generated section replaced by its current contents."""
    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in SECTIONS:
            raise SystemExit(f"README.md: unknown generated section '{name}' (known: {', '.join(SECTIONS)})")
        return match.group(1) + SECTIONS[name]() + match.group(4)

    rendered, count = MARKER.subn(replace, text)
    if count != len(SECTIONS):
        raise SystemExit(f"README.md has {count} generated sections; expected {len(SECTIONS)} ({', '.join(SECTIONS)})")
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the sections in README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md is out of date")
    args = parser.parse_args(argv)
    current = README.read_text()
    if args.write:
        README.write_text(render(current))
    elif args.check:
        if render(current) != current:
            print("README.md is out of date: run `python tools/readme_tables.py --write`", file=sys.stderr)
            return 1
    else:
        for name, make in SECTIONS.items():
            print(f"<!-- generated: {name} -->\n{make()}<!-- /generated -->\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
