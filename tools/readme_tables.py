"""Write the generated tables of the README and the docs from the registry: the supported-model families,
the method x family support matrix (docs/models.md) and the README's per-family summary of it. Nothing
in these sections is typed by hand.

    python tools/readme_tables.py           # print every section
    python tools/readme_tables.py --write   # rewrite them in README.md and docs/*.md
    python tools/readme_tables.py --check   # exit 1 when a page is out of date (the test suite does this)

Each section sits between `<!-- generated: NAME -->` and `<!-- /generated -->` markers, once across the
pages; the text around them is left alone.
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


def pages() -> list[Path]:
    """The pages that may hold generated sections: README.md, then docs/*.md."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


PAGES = pages  # tests point it at copies
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


def support_summary() -> str:
    """Per family (and the generic adapter): how many methods and controls run at their defaults, and which
    are refused (the full matrix with the reasons is in docs/models.md)."""
    rows = api.support_matrix()
    targets = list(dict.fromkeys(r["family"] for r in rows))
    lines = ["| family | runs | refused |", "|---|---|---|"]
    for target in targets:
        mine = [r for r in rows if r["family"] == target]
        refused = [f"`{r['method']}`" for r in mine if r["reason"] is not None]
        lines.append(f"| {target} | {len(mine) - len(refused)} of {len(mine)} | {', '.join(refused) or '—'} |")
    return "\n".join(lines) + "\n"


SECTIONS = {"families": families_table, "support": support_table, "support-summary": support_summary}


def render(text: str, page: str = "README.md") -> tuple[str, list[str]]:
    """`text` with every generated section replaced by its current contents, and the sections' names."""
    names: list[str] = []

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in SECTIONS:
            raise SystemExit(f"{page}: unknown generated section '{name}' (known: {', '.join(SECTIONS)})")
        names.append(name)
        return match.group(1) + SECTIONS[name]() + match.group(4)

    return MARKER.sub(replace, text), names


def render_pages() -> dict[Path, tuple[str, str]]:
    """{page: (current text, rendered text)} for the pages with generated sections; each section once."""
    out, where = {}, {}
    for path in PAGES():
        current = path.read_text()
        rendered, names = render(current, path.name)
        for name in names:
            if name in where:
                raise SystemExit(f"generated section '{name}' is in both {where[name]} and {path.name}")
            where[name] = path.name
        if names:
            out[path] = (current, rendered)
    missing = [name for name in SECTIONS if name not in where]
    if missing:
        raise SystemExit(f"no page holds the generated section(s) {', '.join(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the sections in README.md and docs/")
    mode.add_argument("--check", action="store_true", help="exit 1 when a page is out of date")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        for name, make in SECTIONS.items():
            print(f"<!-- generated: {name} -->\n{make()}<!-- /generated -->\n")
        return 0
    stale = {path: rendered for path, (current, rendered) in render_pages().items() if current != rendered}
    if args.write:
        for path, rendered in stale.items():
            path.write_text(rendered)
    elif stale:
        names = ", ".join(str(p.relative_to(REPO)) if p.is_relative_to(REPO) else p.name for p in stale)
        print(f"{names} out of date: run `python tools/readme_tables.py --write`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
