"""A live `halluc serve` app under uvicorn on 127.0.0.1 (a free port), in a thread of the test process."""
from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import uvicorn

from halluc.serve import ServeOptions, create_app


class LiveServer:
    """Starts on enter, stops (gracefully) on exit; `url` is its base URL."""

    def __init__(self, model, **options):
        options.setdefault("served_name", "toy-llava")
        self.options = ServeOptions(port=0, **options)
        self.app = create_app(model, self.options)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def batches(self) -> int:
        return self.app.state.batcher.batches


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def image_message(url: str, text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]
