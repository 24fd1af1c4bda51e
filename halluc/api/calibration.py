"""`halluc.calibrate`: compute and cache a method's calibration (VTI's steering vectors) ahead of a run.

    halluc.calibrate(m, "vti")                                  # the default calibration set (the toy world's)
    halluc.calibrate(m, "vti", data="demos.jsonl")              # your records: one JSON object a line
    halluc.calibrate(m, "vti", records=[{"image": img, "question": q, "value": good, "h_value": bad}, ...])

A record has the image (a path, relative to `images` or the file's folder, or a PIL image), the question,
the correct caption `value` and the hallucinated one `h_value` (VTI's demo-file fields). The answer names
the cache file and the `calibration` id to run with: `--method vti --param calibration=<id>`.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from halluc.benchmarks.io import read_jsonl_located
from halluc.engine.calibration_sets import CalibrationRecord
from halluc.engine.steering import obtain, records_digest, records_used
from halluc.errors import HallucError
from halluc.images import load_image
from halluc.interventions import make_method, method_class, method_names
from halluc.modeling.loading import check_device_and_dtype, load
from halluc.modeling.lvlm import LVLM
from halluc.modeling.placeholders import check_user_text
from halluc.safe_paths import IMAGE_SUFFIXES, confined

MAX_RECORDS = 10_000
FIELDS = ("image", "question", "value", "h_value")


def calibrate(model: LVLM | str, method: str = "vti", *, data: str | Path | None = None,
              images: str | Path | None = None, records: Sequence[Mapping[str, Any]] | None = None,
              calibration: str = "", device: str = "auto", dtype: str = "auto", **params) -> dict:
    """Compute (or find in the cache) `method`'s vectors for `model` (a loaded model, or a name loaded after
    every check with `device` and `dtype`); returns {"method", "calibration" (the id to run with), "records"
    (how many the vectors come from), "path"}. Parameters are the method's (`num_demos`, `calibration_seed`,
    `num_trials`, `mask_ratio`); `calibration` names a registered set when neither `data` nor `records` is given."""
    calibrated = [name for name in method_names() if method_class(name).calibrated]
    if method not in calibrated:
        raise HallucError(f"method '{method}' reads no calibration set; only {', '.join(calibrated)} does")
    if data is not None and records is not None:
        raise HallucError("calibrate: give data (a JSONL file) or records, not both")
    if calibration and (data is not None or records is not None):
        raise HallucError("calibrate: a calibration set name is for the registered sets; your data is named by "
                          "its content")
    if images is not None and data is None and records is None:
        raise HallucError("calibrate: images is the folder of your records' image paths; give data or records")
    built: Any = make_method(method, {"calibration": calibration, **params})  # every parameter checked, one line
    settings = built.settings()  # a calibrated method's
    chosen: list[CalibrationRecord] | None = None
    if data is not None:
        chosen = read_records(Path(data), Path(images) if images is not None else Path(data).parent)
    elif records is not None:
        if len(records) > MAX_RECORDS:
            raise HallucError(f"calibrate: more than {MAX_RECORDS} records")
        chosen = [_record(r, f"calibrate: record {i + 1}", Path(images) if images is not None else None)
                  for i, r in enumerate(records)]
        if not chosen:
            raise HallucError("calibrate: records is empty")
    if chosen is not None:
        settings = replace(settings, calibration=records_digest(chosen))
    if isinstance(model, str):
        check_device_and_dtype(device, dtype)
        print(f"loading {model} ...", file=sys.stderr)
        model = load(model, device=device, dtype=dtype)
    _, path = obtain(method, model, settings, chosen, note=lambda line: print(f"note: {line}", file=sys.stderr))
    return {"method": method, "calibration": settings.calibration, "path": str(path),
            "records": records_used(settings, chosen)}


def read_records(path: Path, images: Path) -> list[CalibrationRecord]:
    """The records of a JSONL file, each image confined to the `images` folder; one line per problem."""
    located = read_jsonl_located(path)
    if len(located) > MAX_RECORDS:
        raise HallucError(f"calibrate: {path} has more than {MAX_RECORDS} records")
    if not located:
        raise HallucError(f"calibrate: {path} has no records")
    return [_record(row, where, images) for where, row in located]


def _record(row: Any, where: str, images: Path | None) -> CalibrationRecord:
    if not isinstance(row, Mapping):
        raise HallucError(f"{where} must be an object with {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if f not in row]
    if missing:
        raise HallucError(f"{where} lacks {', '.join(missing)}")
    texts = []
    for field in FIELDS[1:]:
        if not isinstance(row[field], str) or not row[field].strip():
            raise HallucError(f"{where}: {field} must be a non-empty text")
        check_user_text(row[field], f"{where}: {field}")
        texts.append(row[field])
    image = row["image"]
    if isinstance(image, (str, Path)):
        if images is None:
            raise HallucError(f"{where}: an image path needs images= (the folder it is relative to)")
        image = confined(images, str(image), f"{where}: image", suffixes=IMAGE_SUFFIXES)
    return CalibrationRecord(load_image(image), *texts)
