"""The README's claims that can drift, checked: the family table and support matrix (generated from the
registry), the command examples (generated from what the commands print), the methods table's parameter
defaults, and every command line's commands and options in README.md and docs/."""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_tables():
    spec = importlib.util.spec_from_file_location("readme_tables", REPO / "tools" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sections_are_up_to_date():
    tables = readme_tables()
    text = (REPO / "README.md").read_text()
    assert tables.render(text) == text, "README.md is out of date: run `python tools/readme_tables.py --write`"
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
    stale = (REPO / "README.md").read_text().replace("| `vcd` | ✓", "| `vcd` | no", 1)
    readme = tmp_path / "README.md"
    readme.write_text(stale)
    monkeypatch.setattr(tables, "README", readme)
    assert tables.main(["--check"]) == 1
    tables.main(["--write"])
    assert readme.read_text() == (REPO / "README.md").read_text()


@functools.cache
def readme_examples():
    spec = importlib.util.spec_from_file_location("readme_examples", REPO / "tools" / "readme_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SHARED = REPO.parent / "shared" / "data"
EXAMPLES = readme_examples().blocks((REPO / "README.md").read_text())


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


def test_every_command_shown_with_its_output_is_an_example():
    text = (REPO / "README.md").read_text()
    inside = "".join(readme_examples().blocks(text))
    shown = [line for line in text.splitlines() if line.startswith("$ ")]
    assert len(EXAMPLES) >= 3 and shown and all(line + "\n" in inside for line in shown)


def test_a_stale_example_is_caught(tmp_path, monkeypatch):
    examples = readme_examples()
    body = next(b for b in EXAMPLES if "--alpah" in b)
    readme = tmp_path / "README.md"
    readme.write_text("text\n<!-- example -->\n```\n" + body.replace("noise_step", "seed") + "```\n<!-- /example -->\n")
    monkeypatch.setattr(examples, "README", readme)
    assert examples.main(["--check"]) == 1
    examples.main(["--write"])
    assert readme.read_text() == "text\n<!-- example -->\n```\n" + body + "```\n<!-- /example -->\n"


def method_table_rows() -> dict[str, str]:
    """{method: its "key parameters (defaults)" cell} from the README's table of methods."""
    text = (REPO / "README.md").read_text().split("\n## Methods\n", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in text.splitlines() if line.startswith("| method |"))
    column = [c.strip() for c in header.split("|")].index("key parameters (defaults)")
    return {cells[1].strip("` "): cells[column] for line in text.splitlines() if line.startswith("| `")
            for cells in [[c.strip() for c in re.split(r"(?<!\\)\|", line)]]}  # `\|` is a pipe in a cell


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
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
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
