"""The README's family table and support matrix are generated from the registry, and up to date."""
from __future__ import annotations

import importlib.util
from pathlib import Path

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
