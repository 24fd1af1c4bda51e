"""halluc/ type-checks clean under mypy with the configuration in pyproject.toml ([tool.mypy]).

CI runs this with the rest of the suite (`make test`); `make typecheck` runs mypy alone. A new error fails
here with mypy's own report. Skipped only where mypy is not installed (it comes with the `test` extra)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install -e '.[test]')")
def test_halluc_type_checks_clean():
    # no arguments: mypy reads `packages` and every other setting from pyproject.toml, as `make typecheck` does
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"mypy found type errors:\n{done.stdout}{done.stderr}"
