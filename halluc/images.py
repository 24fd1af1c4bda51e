"""Reading images given as paths or PIL images, with one clear error per bad file; finding the distinct
images of a batch of pixel tensors."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from halluc.errors import HallucError
from halluc.limits import MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE

SAMPLED = 64  # pixels per row compared before a full comparison (a cheap key, never the verdict)


def load_image(image) -> Image.Image:
    """An RGB PIL image from a path or a PIL image."""
    if isinstance(image, Image.Image):
        check_image_size(image.size, "image")
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
            check_image_size(img.size, f"image {path}")  # from the header, before the pixels are decoded
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise HallucError(f"not an image file (unrecognised format): {path}") from None
    except Image.DecompressionBombError:
        raise HallucError(f"image {path} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS} pixels; "
                          "PIL's decompression-bomb limit)") from None
    except OSError as err:
        raise HallucError(f"cannot read image {path}: {err}") from None


def check_image_size(size: tuple[int, int], where: str) -> None:
    """Refuse an image too large to process (pixels) or too thin for any processor (aspect ratio)."""
    width, height = size
    if width < 1 or height < 1:
        raise HallucError(f"{where} is empty ({width} x {height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise HallucError(f"{where} has {width} x {height} = {width * height} pixels; at most {MAX_IMAGE_PIXELS} "
                          "(resize it first)")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise HallucError(f"{where} is {width} x {height} pixels, an aspect ratio over {MAX_ASPECT_RATIO}:1; "
                          "crop or pad it first")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise HallucError(f"{where} is {width} x {height} pixels; each side must be at least {MIN_IMAGE_SIDE} "
                          "(smaller than one vision patch)")


def check_image_file(path: str | os.PathLike) -> None:
    """The size bounds of an image file, read from its header only (a run checks every image before any work);
    a file that is missing or not an image is left to `load_image`, which names it when it is needed."""
    try:
        with Image.open(path) as img:
            size = img.size
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError):
        return
    check_image_size(size, f"image {path}")


def load_images(images: Sequence) -> list[Image.Image]:
    """Each image loaded once: a path (or PIL image) given several times, as POPE's questions about one
    image in a batch, gives one decoded image object in every place (the processor then sees it once)."""
    loaded: dict = {}
    return [loaded[key] if (key := _identity(i)) in loaded else loaded.setdefault(key, load_image(i))
            for i in images]


def _identity(image) -> tuple:
    if isinstance(image, (str, os.PathLike)):
        return ("path", os.path.abspath(os.fspath(image)))
    return ("object", id(image))


def distinct_rows(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, ...) -> (the distinct rows (M, ...) in first-seen order, (N,) long: each row's distinct row).

    Rows are equal when every value is (`torch.equal`); a few sampled pixels only pick the candidates."""
    flat = pixels.reshape(pixels.shape[0], -1)  # (N, P)
    picks = torch.linspace(0, flat.shape[1] - 1, min(SAMPLED, flat.shape[1]), device=flat.device).long()
    keys = [tuple(row) for row in flat[:, picks].tolist()]
    firsts: list[int] = []  # index of each distinct row's first occurrence
    by_key: dict[tuple, list[int]] = {}  # key -> positions in `firsts`
    inverse = []
    for i, key in enumerate(keys):
        same = next((j for j in by_key.get(key, ()) if torch.equal(flat[firsts[j]], flat[i])), None)
        if same is None:
            same = len(firsts)
            firsts.append(i)
            by_key.setdefault(key, []).append(same)
        inverse.append(same)
    index = torch.tensor(firsts, device=pixels.device)
    return pixels.index_select(0, index), torch.tensor(inverse, device=pixels.device)
