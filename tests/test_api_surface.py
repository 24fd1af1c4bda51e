"""Every name `halluc.api` (and the `halluc` facade) promises resolves, and the light part imports no torch."""
from __future__ import annotations

import subprocess
import sys

import halluc
import halluc.api as api


def test_every_promised_name_resolves():
    assert [name for name in api.__all__ if not hasattr(api, name)] == []
    assert [name for name in halluc.__all__ if not hasattr(halluc, name)] == []


def test_scoring_data_and_reports_need_no_torch():
    code = ("import sys, halluc.api as api; api.score_commands(); api.fetchable(); api.data_home(); "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
