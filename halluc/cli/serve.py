"""`halluc serve`: load one model and serve it over an OpenAI-compatible HTTP API."""
from __future__ import annotations

from pathlib import Path

import typer

from halluc.cli.common import friendly_errors, parse_method_params, stderr


@friendly_errors
def serve(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="Alias, tiny-* model, local directory or hub id."),
    method: list[str] = typer.Option(["none"], "--method", help="Default method when a request names none; "
                                                                "repeat to stack."),
    param: list[str] = typer.Option([], "--param", help="Default method parameter NAME=VALUE (or --NAME VALUE)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback is reachable by others."),
    port: int = typer.Option(8000),
    served_name: str = typer.Option(None, "--served-model-name", help="The model name requests use "
                                                                       "(default: --model)."),
    api_key: str = typer.Option(None, "--api-key", envvar="HALLUC_API_KEY",
                                help="Require 'Authorization: Bearer KEY' on every request (or $HALLUC_API_KEY)."),
    image_dir: Path = typer.Option(None, "--image-dir", help="Allow local image files under this directory."),
    allow_remote_images: bool = typer.Option(False, "--allow-remote-images", help="Fetch http(s) image URLs."),
    max_batch_size: int = typer.Option(32, help="Requests per batch at most."),
    max_wait_ms: float = typer.Option(10.0, help="How long a batch's first request waits for others."),
    max_tokens: int = typer.Option(2048, help="Largest max_tokens a request may ask for."),
    default_max_tokens: int = typer.Option(256, help="max_tokens of a request that gives none."),
    max_prompt_chars: int = typer.Option(16000, help="Longest prompt text, in characters."),
    max_image_pixels: int = typer.Option(4096 * 4096, help="Largest image, in pixels (width x height)."),
    max_body_mb: float = typer.Option(20.0, help="Largest request body, in MiB."),
    max_queue: int = typer.Option(1024, help="Requests waiting or running at most; more get 503."),
    device: str = typer.Option("auto"), dtype: str = typer.Option("auto"),
) -> None:
    """Serve a model over an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health); each request
    picks its method by model name ('NAME+vcd') or extra_body {"halluc": {"method": "vcd", "vcd.alpha": 1}}."""
    from halluc import api
    from halluc.serve import ServeOptions
    from halluc.serve import serve as run_server

    params = parse_method_params(ctx.args, param)
    api.check_model_name(model)  # every cheap check before any weights load
    api.check_device_and_dtype(device, dtype)
    api.make_methods(method, params)
    options = ServeOptions(host=host, port=port, served_name=served_name or model, method=tuple(method),
                           params=params, api_key=api_key, image_dir=image_dir,
                           allow_remote_images=allow_remote_images, max_body_bytes=int(max_body_mb * 2**20),
                           max_image_pixels=max_image_pixels, max_prompt_chars=max_prompt_chars,
                           max_tokens=max_tokens, default_max_tokens=default_max_tokens,
                           max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue)
    if not options.loopback and options.api_key is None:
        stderr(f"warning: serving on {host} without --api-key: anyone who can reach this address can use the model")
    stderr(f"loading {model} ...")
    lvlm = api.load(model, device=device, dtype=dtype)
    api.check_generation(lvlm, [None], ["check"], method, decoding=api.Decoding(), **params)
    run_server(lvlm, options)
