"""The server's settings and limits, checked once at start-up."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from halluc.errors import HallucError

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ServeOptions:
    """Where the server listens, what a request may ask for, and how requests are batched."""

    host: str = "127.0.0.1"  # loopback unless the operator opens it up
    port: int = 8000
    served_name: str = "model"  # the `model` a request names (`NAME` or `NAME+METHOD+...`)
    method: tuple[str, ...] = ("none",)  # used when a request names no method
    params: dict = field(default_factory=dict)  # parameters of the default method
    api_key: str | None = None  # when set, every request needs `Authorization: Bearer KEY`
    image_dir: Path | None = None  # local image files are read only from under this directory
    allow_remote_images: bool = False  # http(s) image URLs are fetched only when the operator allows it
    max_body_bytes: int = 20 * 2**20
    max_image_pixels: int = 4096 * 4096
    max_prompt_chars: int = 16_000
    max_tokens: int = 2048  # the largest max_tokens a request may ask for
    default_max_tokens: int = 256  # when a request gives none
    max_batch_size: int = 32
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for others
    max_queue: int = 1024  # requests waiting or running; beyond it a request gets 503
    remote_timeout_s: float = 10.0
    graceful_timeout_s: float = 60.0  # in-flight requests finish within this after SIGINT/SIGTERM

    def __post_init__(self):
        positive = ("max_body_bytes", "max_image_pixels", "max_prompt_chars", "max_tokens", "default_max_tokens",
                    "max_batch_size", "max_queue")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HallucError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("max_wait_ms", "remote_timeout_s", "graceful_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise HallucError(f"{name.replace('_', '-')} must be a finite number >= 0, got {value!r}")
        if self.default_max_tokens > self.max_tokens:
            raise HallucError(f"default-max-tokens ({self.default_max_tokens}) exceeds max-tokens ({self.max_tokens})")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise HallucError(f"port must be in 0..65535, got {self.port!r}")
        if not self.served_name or "+" in self.served_name or not self.served_name.strip():
            raise HallucError(f"served model name must be non-empty and contain no '+', got {self.served_name!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise HallucError("api key must not be empty")
        if self.image_dir is not None and not Path(self.image_dir).is_dir():
            raise HallucError(f"image directory not found: {self.image_dir}")

    @property
    def loopback(self) -> bool:
        """Whether the server is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
