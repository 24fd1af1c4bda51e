"""The FastAPI application: /v1/chat/completions, /v1/models and /health, with bearer-key checks, body and
image limits, OpenAI-style error bodies, dynamic batching and server-sent events."""
from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from halluc import api
from halluc.errors import HallucError
from halluc.serve.batcher import Batcher, QueueFull, Stopped
from halluc.serve.images import ImagePolicy, fetch_image
from halluc.serve.options import ServeOptions
from halluc.serve.requests import prepare
from halluc.serve.schema import APIError, parse_request

log = logging.getLogger("halluc.serve")
PIECE = re.compile(r"\s*\S+\s*")  # a streamed piece: a word with the spaces around it


@dataclass(frozen=True)
class Answer:
    text: str
    tokens: int  # generated tokens
    finish_reason: str  # "stop" (end of sequence) or "length" (max_tokens reached)


def create_app(model: api.LVLM, options: ServeOptions) -> FastAPI:
    """The server for one loaded model; the batcher's worker starts and stops with the app's lifespan."""
    batcher = Batcher(_batch_runner(model), max_batch_size=options.max_batch_size,
                      max_wait_s=options.max_wait_ms / 1000, max_queue=options.max_queue)
    policy = ImagePolicy(options.image_dir, options.allow_remote_images, options.max_image_pixels,
                         options.max_body_bytes, options.remote_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        try:
            yield
        finally:  # uvicorn has let in-flight requests finish; the queue drains before the worker ends
            batcher.stop(timeout=options.graceful_timeout_s)

    app = FastAPI(title="halluc serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(_key_check(options.api_key))])
    app.state.batcher = batcher
    _error_handlers(app)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": options.served_name, "load": batcher.load, "batches": batcher.batches}

    @app.get("/v1/models")
    async def list_models():
        names = [options.served_name] + [f"{options.served_name}+{m}" for m in api.available_methods(model)]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "halluc"}
                                           for n in names]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        chat = parse_request(await _read_body(request, options.max_body_bytes))
        work = prepare(chat, options, model)
        image = await run_in_threadpool(fetch_image, work.image_url, policy)
        try:
            answer = await batcher.submit(work.batch_key, (work, image))
        except QueueFull:
            raise APIError(503, "server busy: too many requests waiting; retry later", code="server_busy") from None
        except Stopped:
            raise APIError(503, "server is shutting down", code="shutting_down") from None
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": chat.model}
        applied = {"method": list(work.method), "params": work.params}
        if chat.stream:
            return StreamingResponse(_events(meta, answer, applied), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return {**meta, "object": "chat.completion", "halluc": applied,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": answer.finish_reason, "logprobs": None}]}

    return app


def _batch_runner(model: api.LVLM):
    """One `generate` call for a batch of (work, image) that share methods, parameters and decoding; a
    batch whose call refuses its input is retried one request at a time, so only the bad one fails."""
    def run(batch):
        first = batch[0][0]
        try:
            result = api.generation(model, [image for _, image in batch], [w.prompt for w, _ in batch],
                                    list(first.method), decoding=first.decoding, **first.params)
        except HallucError as err:
            if len(batch) > 1:
                return [answer for item in batch for answer in run([item])]
            return [APIError(400, str(err), param="halluc")]
        except Exception:
            log.exception("generation failed for a batch of %d", len(batch))
            return [APIError(500, "generation failed (the server log has the details)")] * len(batch)
        limit = first.decoding.max_new_tokens
        return [Answer(text, len(tokens), "length" if len(tokens) >= limit else "stop")
                for text, tokens in zip(result.texts, result.tokens)]
    return run


def _events(meta: dict, answer: Answer, applied: dict):
    """Server-sent events in OpenAI's chunk format: the role, the text in pieces, the finish reason, [DONE]."""
    def chunk(delta: dict, finish_reason=None, **extra) -> str:
        body = {**meta, "object": "chat.completion.chunk", **extra,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, halluc=applied)
    for piece in PIECE.findall(answer.text):
        yield chunk({"content": piece})
    yield chunk({}, answer.finish_reason)
    yield "data: [DONE]\n\n"


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it is over `limit` bytes (by its Content-Length or as it arrives)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise APIError(413, f"request body is over this server's limit of {limit} bytes", code="body_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"request body is over this server's limit of {limit} bytes", code="body_too_large")
    return bytes(body)


def _key_check(key: str | None):
    """A dependency that refuses a request without `Authorization: Bearer KEY` (compared in constant time)."""
    expected = key.encode() if key is not None else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                           code="invalid_api_key")
    return check


def _error_handlers(app: FastAPI) -> None:
    """Every error answered with OpenAI's error body; the server stays up."""
    @app.exception_handler(APIError)
    async def api_error(_request, err: APIError):
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(_request, err: HTTPException):
        return JSONResponse(APIError(err.status_code, str(err.detail)).body(), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, err: RequestValidationError):
        return JSONResponse(APIError(400, str(err.errors()[0].get("msg", "invalid request"))).body(), status_code=400)

    @app.exception_handler(Exception)
    async def server_error(_request, err: Exception):
        log.exception("unhandled error", exc_info=err)
        return JSONResponse(APIError(500, "internal server error").body(), status_code=500)
