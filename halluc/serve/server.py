"""Running the app under uvicorn: bound to the options' host (loopback by default), graceful on SIGINT/SIGTERM."""
from __future__ import annotations

import uvicorn

from halluc import api
from halluc.serve.app import create_app
from halluc.serve.options import ServeOptions


def serve(model: api.LVLM, options: ServeOptions) -> None:
    """Serve `model` until interrupted; in-flight requests finish (up to `graceful_timeout_s`) before exit."""
    app = create_app(model, options)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="info", access_log=True,
                            timeout_graceful_shutdown=options.graceful_timeout_s,
                            limit_concurrency=options.max_queue + 64, server_header=False)
    uvicorn.Server(config).run()
