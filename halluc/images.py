"""Reading images given as paths or PIL images, with one clear error per bad file."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from halluc.errors import HallucError


def load_image(image) -> Image.Image:
    """An RGB PIL image from a path or a PIL image."""
    if isinstance(image, Image.Image):
        try:
            return image.convert("RGB")
        except Image.DecompressionBombError:
            raise HallucError("image is too large to decode safely (PIL's decompression-bomb limit)") from None
    if not isinstance(image, (str, os.PathLike)):
        raise HallucError(f"expected an image path or PIL image, got {type(image).__name__}")
    path = Path(image)
    if not path.exists():
        raise HallucError(f"image not found: {path}")
    if path.is_dir():
        raise HallucError(f"image path is a directory, not a file: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise HallucError(f"not an image file (unrecognised format): {path}") from None
    except Image.DecompressionBombError:
        raise HallucError(f"image {path} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS} pixels; "
                          "PIL's decompression-bomb limit)") from None
    except OSError as err:
        raise HallucError(f"cannot read image {path}: {err}") from None


def load_images(images: Sequence) -> list[Image.Image]:
    return [load_image(i) for i in images]
