"""The in-model methods' decode-time benchmark: smoke run on CPU writes well-formed long-format rows."""
from __future__ import annotations

import csv

import pytest
import torch

from tests.speed.helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_inmodel")


def test_smoke_writes_one_row_per_method_with_counted_passes(bench, tmp_path):
    out = bench.main(["--smoke", "--device", "cpu", "--out", str(tmp_path / "b.csv")])
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.COLUMNS
        rows = {r["method"]: r for r in reader}
    assert list(rows) == ["none", "vhr", "vista", "damro", "cca", "only", "vaf", "memvr", "deco", "vti"]
    assert float(rows["none"]["ratio"]) == 1.0 and float(rows["none"]["prefill_ratio"]) == 1.0
    passes = {m: (int(r["extra_passes"]), int(r["rows_per_sample"])) for m, r in rows.items()}
    # VTI's vectors: computed in the timed call when --smoke's one call finds them in no cache (its 4 calibration
    # records x 2 captions through the LM), else none
    assert passes.pop("vti") in ((8, 1), (0, 1))
    assert passes == {"none": (0, 1), "vhr": (1, 1), "vista": (2, 1), "damro": (0, 2), "cca": (0, 1),
                      "only": (0, 1), "vaf": (0, 1), "memvr": (0, 1), "deco": (0, 1)}  # one pass, one row
    for r in rows.values():
        assert r["model"] == "tiny-llava" and float(r["ms_per_token"]) > 0 and float(r["prefill_ms"]) > 0
        assert all(r[c] for c in ("device", "torch", "transformers", "halluc", "git_commit", "date", "tokens"))
    bench.main(["--smoke", "--device", "cpu", "--methods", "cca", "--out", str(out)])  # appends, one header
    lines = out.read_text().splitlines()
    assert sum(line.startswith("method,") for line in lines) == 1 and len(lines) == 1 + 10 + 2


def test_bad_requests_fail_before_any_work(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--methods", "vcd", "--out", str(tmp_path / "b.csv")])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="needs a GPU"):
            bench.main(["--models", "7b", "--out", str(tmp_path / "b.csv")])


def test_small_shape_has_llava_15_image_grid(bench):
    lvlm = bench.shaped_llava("small", torch.device("cpu"))
    inputs = lvlm.adapter.build_inputs(lvlm.processor, bench.halluc.api.load_images([bench.IMAGE]), [bench.PROMPT])
    assert [s.grid for s in lvlm.adapter.image_spans(lvlm.model, inputs)[0]] == [(24, 24)]
