"""Auxiliary image views for the decoding methods: VCD's diffusion noise, RITUAL's random
transformations, AGLA's prompt-relevance mask.

Every random draw is keyed by (seed, the image's pixels), not by the sample's place in the batch,
so a sample gets the same view alone or in any batch (and the global RNGs are never touched).
"""
from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageFilter, ImageOps


def image_key(image: Image.Image, seed: int) -> int:
    """A 32-bit seed (what torch's CPU generator uses) from the method's seed and the image content."""
    return zlib.crc32(image.tobytes(), zlib.crc32(seed.to_bytes(8, "little", signed=True)))


# ---- VCD: DDPM forward noise on the normalised pixel tensor ----------------------------------
DIFFUSION_STEPS = 1000


def noise_coefficients(step: int) -> tuple[float, float]:
    """(sqrt(ᾱ_t), sqrt(1 − ᾱ_t)) of VCD's sigmoid schedule:
    β = sigmoid(linspace(−6, 6, 1000))·(5e−3 − 1e−5) + 1e−5, ᾱ_t = ∏_{s≤t} (1 − β_s)."""
    betas = torch.sigmoid(torch.linspace(-6, 6, DIFFUSION_STEPS, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    alpha_bar = torch.cumprod(1 - betas, 0)[step].item()
    return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)


def noised_pixels(images: Sequence[Image.Image], image_processor, seed: int, step: int
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`Branch.pixels` for VCD: v' = sqrt(ᾱ_t)·v + sqrt(1 − ᾱ_t)·ε on each image's slice of pixel_values."""
    keep, spread = noise_coefficients(step)

    def apply(pixels: torch.Tensor) -> torch.Tensor:
        chunks = pixels.split(_rows_per_image(images, image_processor, pixels.shape[0]))
        eps = torch.cat([_image_noise(c, torch.Generator().manual_seed(image_key(img, seed)))
                         for c, img in zip(chunks, images)]).to(pixels.device)  # float32, one draw per image
        return (keep * pixels.float() + spread * eps).to(pixels.dtype)

    return apply


def _image_noise(chunk: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ε for one image's pixel tensor. A batch pads its images at the end with zeros: crops or sub-images
    (LLaVA-NeXT, Idefics3: (1, slots, C, H, W)) and pixels (Pixtral: (1, C, H, W) at the largest size).
    The padding stays zero (Idefics3 tells padding from images by exactly that), and the image's own part
    gets the noise it gets alone, drawn for that part only, so a sample's noise does not depend on its
    batch. Normalised pixels are never exactly 0 (the means are not whole pixel values), so the last
    non-zero index along each axis ends the image's part; unpadded tensors draw exactly as before."""
    if chunk.dim() < 4:  # flattened patches (Qwen): never padded
        return torch.randn(chunk.shape, generator=generator)
    extent = [chunk.shape[0]] + [_kept(chunk, dim) for dim in range(1, chunk.dim())]
    eps = torch.zeros(chunk.shape)
    eps[tuple(slice(0, n) for n in extent)] = torch.randn(extent, generator=generator)
    return eps


def _kept(chunk: torch.Tensor, dim: int) -> int:
    """1 + the last index along `dim` holding a non-zero value (how much of the axis the padding left)."""
    nonzero = (chunk != 0).transpose(0, dim).flatten(1).any(-1).nonzero()
    return int(nonzero.max()) + 1 if len(nonzero) else 0


def _rows_per_image(images, image_processor, total: int) -> list[int]:
    """Rows of pixel_values each image fills: one per image, or (Qwen2-VL's flattened patches) its patch count."""
    if total == len(images):
        return [1] * len(images)
    rows = [image_processor(images=[img], return_tensors="pt")["pixel_values"].shape[0] for img in images]
    if sum(rows) != total:
        raise ValueError(f"cannot split {total} pixel rows over {len(images)} images (got {rows})")
    return rows


# ---- RITUAL: one random transformation per image (torchvision's v2 pool, in PIL) ---------------
def _rotate(img, rng):  # RandomRotation(180): uniform angle, nearest, black fill
    return img.rotate(rng.uniform(-180, 180), resample=Image.Resampling.NEAREST, fillcolor=(0, 0, 0))


def _color_jitter(img, rng):  # ColorJitter(brightness=1, contrast=1, saturation=1, hue=0.5), random order
    ops = [lambda x, f=rng.uniform(0, 2): ImageEnhance.Brightness(x).enhance(f),
           lambda x, f=rng.uniform(0, 2): ImageEnhance.Contrast(x).enhance(f),
           lambda x, f=rng.uniform(0, 2): ImageEnhance.Color(x).enhance(f),
           lambda x, f=rng.uniform(-0.5, 0.5): _shift_hue(x, f)]
    rng.shuffle(ops)
    for op in ops:
        img = op(img)
    return img


def _shift_hue(img, factor):
    h, s, v = img.convert("HSV").split()
    shift = int(round(factor * 255))
    return Image.merge("HSV", (h.point(lambda x: (x + shift) % 256), s, v)).convert("RGB")


def _blur(img, rng):  # GaussianBlur(kernel_size=13, sigma=(1.5, 2.0))
    return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(1.5, 2.0)))


def _resized_crop(img, rng, size: int = 336):  # RandomResizedCrop(336), scale (0.08, 1), ratio (3/4, 4/3)
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
    side = min(w, h)  # torchvision's fallback: the central crop
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


TRANSFORMS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "hflip": lambda img, rng: ImageOps.mirror(img),
    "vflip": lambda img, rng: ImageOps.flip(img),
    "rotate": _rotate,
    "color": _color_jitter,
    "blur": _blur,
    "crop": _resized_crop,
}


def random_transform(image: Image.Image, seed: int, pool: Sequence[str] = tuple(TRANSFORMS)) -> tuple[str, Image.Image]:
    """RITUAL's T(v): one transformation of `pool`, drawn uniformly, with random parameters."""
    rng = random.Random(image_key(image, seed))
    name = rng.choice(list(pool))
    return name, TRANSFORMS[name](image.convert("RGB"), rng)


# ---- AGLA: keep the prompt-relevant pixels, black out the rest ---------------------------------
def mask_image(image: Image.Image, scores: torch.Tensor, keep: float, box: tuple[int, int, int, int] | None = None
               ) -> Image.Image:
    """The image with every pixel of `box` (default: all) whose relevance ranks below the top `keep`
    share set to black. `scores` (h, w) covers the box; like LAVIS' getAttMap it is min-max
    normalised, resized bicubically to the box, blurred with σ = 0.02·max(box side) and normalised again."""
    box = box or (0, 0, *image.size)
    width, height = box[2] - box[0], box[3] - box[1]
    cam = _unit(scores.detach().float().cpu())[None, None]
    cam = F.interpolate(cam, size=(height, width), mode="bicubic", align_corners=False)[0, 0]
    cam = _unit(gaussian_blur(cam, 0.02 * max(width, height)))
    threshold = cam.flatten().sort(descending=True).values[min(int(cam.numel() * keep), cam.numel() - 1)]
    region = torch.from_numpy(np.array(image.convert("RGB").crop(box)))  # (h, w, 3) uint8
    region = region * (cam >= threshold)[..., None].to(region.dtype)
    out = image.convert("RGB").copy()
    out.paste(Image.fromarray(region.numpy()), box[:2])
    return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x - x.min()
    return x / x.max() if x.max() > 0 else x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(h, w) map blurred with a separable Gaussian (reflect borders, truncated at 4σ as scipy does)."""
    radius = max(1, int(4 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    y = x[None, None]
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect" if radius < x.shape[1] else "replicate"),
                 kernel.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect" if radius < x.shape[0] else "replicate"),
                 kernel.view(1, 1, -1, 1))
    return y[0, 0]


def visible_box(image_processor, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The part of an image of `size` (w, h) that the processor keeps: the central crop for
    shortest-edge resize + center-crop processors (CLIP / LLaVA-1.5), else the whole image."""
    w, h = size
    crop = getattr(image_processor, "crop_size", None)
    resize = getattr(image_processor, "size", None)
    shortest = getattr(resize, "shortest_edge", None) if resize is not None else None
    if not getattr(image_processor, "do_center_crop", False) or crop is None or not shortest:
        return (0, 0, w, h)
    scale = shortest / min(w, h)
    cw, ch = min(w, crop.width / scale), min(h, crop.height / scale)
    left, top = (w - cw) / 2, (h - ch) / 2
    return (round(left), round(top), round(left + cw), round(top + ch))
