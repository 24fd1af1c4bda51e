"""The image processor called once per distinct image object of a batch.

`halluc.images.load_images` gives one object per distinct file, so a POPE batch (six questions per
image) hands the processor each image several times; preprocessing (resize, crop, normalise: several
milliseconds per COCO image on a CPU) runs once per object and its per-image outputs are spread back.
The spread is exact (a copy of the same rows); a processor whose outputs are not one row per image
(Qwen2-VL's flattened patches, InternVL's tiles) is called on every image, from its first such output on.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image

_NOT_PER_IMAGE: set[type] = set()  # image processor classes seen giving other than one row per image


@contextlib.contextmanager
def images_processed_once(processor: Any) -> Iterator[None]:
    """Within the block, `processor.image_processor` runs on each distinct image object once per call."""
    inner = getattr(processor, "image_processor", None)
    if inner is None or isinstance(inner, _OncePerImage) or type(inner) in _NOT_PER_IMAGE:
        yield
        return
    try:
        processor.image_processor = _OncePerImage(inner)
    except AttributeError:  # a processor whose image processor cannot be set (a read-only property)
        yield
        return
    try:
        yield
    finally:
        processor.image_processor = inner


class _OncePerImage:
    """A stand-in for an image processor (every attribute is the real one's) whose call deduplicates."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def __call__(self, images=None, *args, **kwargs):
        if images is None:
            images = kwargs.pop("images", None)
        flat = _single_images(images)
        if flat is None:
            return self._inner(images, *args, **kwargs)
        firsts: dict[int, int] = {}  # id(image) -> its distinct index
        inverse = [firsts.setdefault(id(img), len(firsts)) for img in flat]
        if len(firsts) == len(flat):
            return self._inner(images, *args, **kwargs)
        distinct = list({id(img): img for img in flat}.values())  # first-seen order, as `inverse` counts
        nested = not isinstance(images[0], Image.Image)
        out = self._inner([[img] for img in distinct] if nested else distinct, *args, **kwargs)
        spread = _spread_rows(out, inverse, len(distinct))
        if spread is None:  # not one row per image: called on every image, here and from now on
            _NOT_PER_IMAGE.add(type(self._inner))
            return self._inner(images, *args, **kwargs)
        return spread


def _single_images(images) -> list | None:
    """The images of a list of PIL images or of one-image lists, else None (left to the processor)."""
    if not isinstance(images, (list, tuple)) or not images:
        return None
    if all(isinstance(i, Image.Image) for i in images):
        return list(images)
    if all(isinstance(i, (list, tuple)) and len(i) == 1 and isinstance(i[0], Image.Image) for i in images):
        return [i[0] for i in images]
    return None


def _spread_rows(out, inverse: list[int], distinct: int):
    """Each per-image entry of the processor's output (tensors and lists with one row per distinct image)
    taken by `inverse`; None when some entry is not one row per image."""
    index = torch.tensor(inverse)
    spread: dict[str, Any] = {}
    for key, value in out.items():
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == distinct:
            spread[key] = value.index_select(0, index.to(value.device))
        elif isinstance(value, (list, tuple)) and len(value) == distinct:
            spread[key] = [value[i] for i in inverse]
        else:
            return None
    return type(out)(spread)
