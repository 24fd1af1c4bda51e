"""Where benchmark files live: the data home, and the images directory a user passes."""
from __future__ import annotations

import os
from pathlib import Path

from halluc.errors import HallucError


def data_home() -> Path:
    """Where `halluc data fetch` puts benchmark files: $HALLUC_DATA or ~/.cache/halluc/data."""
    return Path(os.environ.get("HALLUC_DATA", Path.home() / ".cache" / "halluc" / "data"))


def need_images(images: Path | None, benchmark: str, what: str) -> Path:
    """The images directory, or one clear line saying which images the benchmark needs."""
    if images is None:
        raise HallucError(f"{benchmark} needs --images DIR with the {what} images")
    if not Path(images).is_dir():
        raise HallucError(f"images directory not found: {images}")
    return Path(images)
