"""Images of a request: data URIs always; local files only under the operator's directory; http(s) URLs
only when the operator allows remote images. Every image is size-checked before it is decoded."""
from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from halluc.serve.schema import APIError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # what a request may send; nothing else is parsed
PARAM = "messages.content.image_url"


@dataclass(frozen=True)
class ImagePolicy:
    image_dir: Path | None
    allow_remote: bool
    max_pixels: int
    max_bytes: int
    remote_timeout_s: float


def fetch_image(url: str, policy: ImagePolicy) -> Image.Image:
    """An RGB image from a request's image URL, or a 400 that says why not."""
    if url.startswith("data:"):
        return decode_image(_data_uri_bytes(url), policy.max_pixels)
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        if not policy.allow_remote:
            raise APIError(400, "remote image URLs are not fetched by this server (the operator can allow them with "
                                "--allow-remote-images); send the image as a data URI", param=PARAM)
        return decode_image(_remote_bytes(url, policy), policy.max_pixels)
    if scheme in ("", "file"):
        return decode_image(_local_bytes(url, policy), policy.max_pixels)
    raise APIError(400, f"unsupported image URL scheme '{scheme}': use a data URI", param=PARAM)


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Bytes -> RGB image; the pixel count is read from the header and checked before decoding."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise APIError(400, f"image has {width}x{height} = {width * height} pixels, over this server's "
                                    f"limit of {max_pixels}", param=PARAM)
            return img.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise APIError(400, f"not a readable image (accepted formats: {', '.join(FORMATS)})", param=PARAM) from None
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        raise APIError(400, f"cannot decode image: {err}", param=PARAM) from None


def _data_uri_bytes(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise APIError(400, "an image data URI must be 'data:image/...;base64,<data>'", param=PARAM)
    if not header[5:].startswith("image/"):
        raise APIError(400, f"data URI media type must be image/*, got '{header[5:-7]}'", param=PARAM)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "image data URI is not valid base64", param=PARAM) from None


def _local_bytes(url: str, policy: ImagePolicy) -> bytes:
    if policy.image_dir is None:
        raise APIError(400, "local image files are refused (the operator can allow a directory with --image-dir); "
                            "send the image as a data URI", param=PARAM)
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise APIError(400, "file URLs must name this machine (file:///path)", param=PARAM)
    root = policy.image_dir.resolve()
    raw = unquote(parsed.path) if parsed.scheme == "file" else url
    try:
        path = (root / raw).resolve(strict=True)  # symlinks followed: the target itself must be inside
    except (OSError, RuntimeError, ValueError):
        raise APIError(400, f"image file not found under the allowed directory: {raw}", param=PARAM) from None
    if not path.is_relative_to(root):
        raise APIError(400, f"image file is outside the allowed directory: {raw}", param=PARAM)
    if not path.is_file():
        raise APIError(400, f"not a regular file: {raw}", param=PARAM)
    if path.stat().st_size > policy.max_bytes:
        raise APIError(400, f"image file is over {policy.max_bytes} bytes: {raw}", param=PARAM)
    return path.read_bytes()


def _remote_bytes(url: str, policy: ImagePolicy) -> bytes:
    import httpx

    chunks, size = [], 0
    try:
        with httpx.stream("GET", url, timeout=policy.remote_timeout_s, follow_redirects=True) as response:
            if response.status_code != 200:
                raise APIError(400, f"image URL answered HTTP {response.status_code}", param=PARAM)
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > policy.max_bytes:
                    raise APIError(400, f"remote image is over {policy.max_bytes} bytes", param=PARAM)
                chunks.append(chunk)
    except httpx.HTTPError as err:
        raise APIError(400, f"cannot fetch image URL: {type(err).__name__}", param=PARAM) from None
    return b"".join(chunks)
