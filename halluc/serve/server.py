"""Running the app under uvicorn: bound to the options' host (loopback by default), graceful on SIGINT/SIGTERM."""
from __future__ import annotations

import contextlib
import signal
import threading

import uvicorn

from halluc import api
from halluc.serve.app import create_app
from halluc.serve.options import ServeOptions


def serve(model: api.LVLM, options: ServeOptions) -> None:
    """Serve `model` until SIGINT or SIGTERM; in-flight and queued requests finish first (up to
    `graceful_timeout_s`), then this returns."""
    app = create_app(model, options)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="info", access_log=True,
                            # uvicorn types it int; it only hands it to asyncio.timeout(), which takes float seconds
                            timeout_graceful_shutdown=options.graceful_timeout_s,  # type: ignore[arg-type]
                            limit_concurrency=options.max_queue + 64, server_header=False)
    with _graceful_signal_ends_normally():
        uvicorn.Server(config).run()


@contextlib.contextmanager
def _graceful_signal_ends_normally():
    """uvicorn shuts down gracefully on a signal, then raises the signal again for the handler it replaced; a
    quiet handler here turns that second delivery into a normal return (exit code 0, no traceback)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    quiet = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in quiet.items():
            signal.signal(sig, handler)
