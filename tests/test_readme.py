"""The claims of the README and the docs that can drift, checked: the family table, the support matrix and
its summary (generated from the registry), the command examples (generated from what the commands print),
the methods table's parameter defaults, and every command line's commands and options in README.md and
docs/; and the README stays a short front page."""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def readme_tables():
    spec = importlib.util.spec_from_file_location("readme_tables", REPO / "tools" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sections_are_up_to_date():
    tables = readme_tables()
    for path, (current, rendered) in tables.render_pages().items():
        assert rendered == current, f"{path.name} is out of date: run `python tools/readme_tables.py --write`"
    assert tables.main(["--check"]) == 0


def test_every_family_and_method_is_in_the_tables():
    from halluc import api
    from halluc.modeling.registry import families

    tables = readme_tables()
    family_rows, matrix = tables.families_table(), tables.support_table()
    assert all(f"`{f.tiny_name}`" in family_rows for f in families())
    header = matrix.splitlines()[0]
    assert all(f" {f.name} |" in header for f in families()) and header.endswith(" generic |")
    assert {line.split("|")[1].strip(" `") for line in matrix.splitlines()[2:]} == {r["method"] for r in
                                                                                  api.support_matrix()}


def test_a_stale_section_is_caught(tmp_path, monkeypatch):
    tables = readme_tables()
    copies = [tmp_path / p.name for p in PAGES]
    for page, copy in zip(PAGES, copies):
        copy.write_text(page.read_text())
    matrix = tmp_path / "models.md"
    matrix.write_text(matrix.read_text().replace("| `vcd` | ✓", "| `vcd` | no", 1))
    monkeypatch.setattr(tables, "PAGES", lambda: copies)
    assert tables.main(["--check"]) == 1
    tables.main(["--write"])
    assert [c.read_text() for c in copies] == [p.read_text() for p in PAGES]


def test_a_section_on_two_pages_or_on_none_is_refused(tmp_path, monkeypatch):
    tables = readme_tables()
    twice = tmp_path / "a.md"
    twice.write_text("<!-- generated: support -->\n<!-- /generated -->\n" * 2)
    monkeypatch.setattr(tables, "PAGES", lambda: [twice])
    with pytest.raises(SystemExit, match="'support' is in both a.md and a.md"):
        tables.main(["--check"])
    twice.write_text("no sections\n")
    with pytest.raises(SystemExit, match="no page holds the generated section"):
        tables.main(["--check"])


@functools.cache
def readme_examples():
    spec = importlib.util.spec_from_file_location("readme_examples", REPO / "tools" / "readme_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SHARED = REPO.parent / "shared" / "data"
EXAMPLES = [body for page in PAGES for body in readme_examples().blocks(page.read_text())]


@pytest.mark.parametrize("body", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_every_example_prints_what_the_readme_shows(body):
    if "../shared/" in body and not SHARED.is_dir():
        pytest.skip("needs ../shared/data")
    examples = readme_examples().run_block(body)
    assert "".join(e.render() for e in examples) == body, \
        "README.md's examples are out of date: run `python tools/readme_examples.py --write`"
    for example in examples:  # bad input: one line and exit code 2; anything else succeeds
        error = example.output.startswith("error:")
        assert example.exit_code == (2 if error else 0), example.command
        assert not error or "\n" not in example.output, example.command


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_shown_with_its_output_is_an_example(page):
    text = page.read_text()
    inside = "".join(readme_examples().blocks(text))
    shown = [line for line in text.splitlines() if line.startswith("$ ")]
    assert all(line + "\n" in inside for line in shown)
    assert len(EXAMPLES) >= 3


def test_a_stale_example_is_caught(tmp_path, monkeypatch):
    examples = readme_examples()
    body = next(b for b in EXAMPLES if "--alpah" in b)
    readme = tmp_path / "README.md"
    readme.write_text("text\n<!-- example -->\n```\n" + body.replace("noise_step", "seed") + "```\n<!-- /example -->\n")
    monkeypatch.setattr(examples, "PAGES", lambda: [readme])
    assert examples.main(["--check"]) == 1
    examples.main(["--write"])
    assert readme.read_text() == "text\n<!-- example -->\n```\n" + body + "```\n<!-- /example -->\n"


def method_table_rows() -> dict[str, str]:
    """{method: its "key parameters (defaults)" cell} from the tables of methods and of controls
    (docs/methods.md, docs/controls.md: their first table each)."""
    rows = {}
    for page in ("methods.md", "controls.md"):
        text = (REPO / "docs" / page).read_text()
        start = text.index("\n| method |" if page == "methods.md" else "\n| control |") + 1
        table = text[start:].split("\n\n", 1)[0].splitlines()
        header = [c.strip() for c in table[0].split("|")]
        column = next(i for i, c in enumerate(header) if c.endswith("parameters (defaults)"))
        rows.update({cells[1].strip("` "): cells[column] for line in table if line.startswith("| `")
                     for cells in [[c.strip() for c in re.split(r"(?<!\\)\|", line)]]})  # `\|`: a pipe in a cell
    return rows


def test_the_methods_table_names_real_parameters_and_their_defaults():
    from halluc.interventions import aliases, method_class

    rows = method_table_rows()
    assert set(rows) == {m["name"] for m in __import__("halluc").methods() if m["name"] != "none"}
    for method, cell in rows.items():
        stack = aliases().get(method, (method,))
        for name, value in re.findall(r"`([\w.]+)`(?: ([\d.]+(?:/\d+)?)(?![\w/]))?", cell):
            owner, _, param = name.rpartition(".")
            assert owner in ("", *stack) and (owner or len(stack) == 1), f"{method}: `{name}` needs its method"
            defaults = {f.name: f.default for f in dataclasses.fields(method_class(owner or stack[0]))}
            assert param in defaults, f"{method}: the README names `{name}`, which is not a parameter"
            if value:
                number = float(value.split("/")[0]) / (float(value.split("/")[1]) if "/" in value else 1)
                assert defaults[param] == pytest.approx(number), f"{method}: `{name}` defaults to {defaults[param]}"


def command_lines() -> list[tuple[str, str]]:
    """(file, line) for every `halluc ...` command line in the code blocks of README.md and docs/*.md
    (continuations joined)."""
    found = []
    for path in PAGES:
        lines, fenced = iter(path.read_text().splitlines()), False
        for line in lines:
            fenced ^= line.startswith("```")
            while fenced and line.startswith("halluc ") and line.endswith("\\"):
                line = line[:-1] + next(lines)
            if fenced and line.startswith("halluc "):
                found.append((path.name, line))
    return found


def test_every_command_line_in_the_docs_names_real_commands_and_options():
    import typer

    from halluc.cli import app
    from halluc.interventions import method_class, method_names

    method_params = {f.name for m in method_names() for f in dataclasses.fields(method_class(m))}
    lines = command_lines()
    assert len(lines) > 20
    for where, line in lines:
        words = [w.strip("[](),") for w in line.split("  #")[0].replace("...", " ").split()]  # a comment is no option
        command = typer.main.get_command(app)
        for word in words[1:]:
            if not hasattr(command, "commands") or word.startswith("-"):  # a group's subcommands
                break
            names = word.split("|")
            assert all(n in command.commands for n in names), f"{where}: `{line}`: no command '{word}'"
            command = command.commands[names[0]]
        options = {o for p in command.params for o in p.opts}
        for word in words:
            name = word.split("=")[0]
            if not name.startswith("--") or name in options:
                continue
            assert command.name in ("generate", "run") and name[2:].rpartition(".")[2] in method_params, \
                f"{where}: `{line}`: {command.name} has no option {name}"


def test_the_readme_is_a_short_front_page_whose_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 220, "the README is the front page: move reference text to docs/"
    targets = re.findall(r"\]\(((?:docs/)[^)#\s]+)(?:#[^)]*)?\)", text)
    assert {"docs/methods.md", "docs/python.md", "docs/benchmarks.md", "docs/models.md"} <= set(targets)
    assert all((REPO / t).exists() for t in targets), [t for t in targets if not (REPO / t).exists()]
    nav = (REPO / "mkdocs.yml").read_text()
    assert all(page.name in nav for page in (REPO / "docs").glob("*.md")), "every docs page is in mkdocs.yml's nav"


def toy_world_table(page: Path) -> list[str]:
    """The rows of a page's toy-world results table (the one headed by POPE F1 random)."""
    lines = page.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method | POPE F1 random"))
    return list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))


def test_the_toy_world_tables_agree_and_cover_every_method():
    """The README's results table and docs/toy-world.md's are one table (two copies drift), with a row for
    vanilla and every registered method that is not a control."""
    from halluc.interventions.registry import method_class, method_names

    readme, docs = toy_world_table(REPO / "README.md"), toy_world_table(REPO / "docs" / "toy-world.md")
    assert readme == docs
    rows = {line.split("|")[1].strip() for line in readme[2:]}
    expected = {n for n in method_names() if method_class(n).category != "control" and n != "none"} | {"vanilla"}
    assert rows == expected, sorted(rows ^ expected)
