"""From a validated chat request to the work it asks for: one image, one prompt, a method stack with its
parameters, and decoding settings, all checked before the request joins a batch."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from halluc import api
from halluc.errors import HallucError
from halluc.serve.options import ServeOptions
from halluc.serve.schema import APIError, ChatCompletionRequest, ImagePart, TextPart


@dataclass(frozen=True)
class Work:
    """What one request asks the model for."""

    image_url: str
    prompt: str
    method: tuple[str, ...]
    params: dict = field(hash=False)
    decoding: api.Decoding

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share a batch: same methods, parameters and decoding. A sampled request
        with a seed runs alone, so that its answer depends on its seed only."""
        alone = uuid.uuid4().hex if self.decoding.do_sample and self.decoding.seed is not None else None
        return (self.method, tuple(sorted((k, repr(v)) for k, v in self.params.items())), self.decoding, alone)


def read_messages(request: ChatCompletionRequest, options: ServeOptions) -> tuple[str, str]:
    """(image URL, prompt) of a single-turn request: one user message with exactly one image part and text."""
    if len(request.messages) != 1 or request.messages[0].role != "user":
        roles = ", ".join(m.role for m in request.messages)
        raise APIError(400, f"halluc serve answers one user message (a single turn; methods act on one image and "
                            f"one question, under the model's own chat template); got roles: {roles}",
                       param="messages")
    content = request.messages[0].content
    parts = [TextPart(type="text", text=content)] if isinstance(content, str) else list(content or [])
    images = [p.image_url.url for p in parts if isinstance(p, ImagePart)]
    text = "\n".join(p.text for p in parts if isinstance(p, TextPart) and p.text)
    if len(images) != 1:
        raise APIError(400, f"a request needs exactly one image_url part, got {len(images)}",
                       param="messages.content")
    if not text.strip():
        raise APIError(400, "a request needs a text part with the question", param="messages.content")
    if len(text) > options.max_prompt_chars:
        raise APIError(400, f"prompt is {len(text)} characters, over this server's limit of "
                            f"{options.max_prompt_chars}", param="messages.content", code="context_length_exceeded")
    return images[0], text


def choose_method(request: ChatCompletionRequest, options: ServeOptions) -> tuple[tuple[str, ...], dict]:
    """The method stack and its parameters: from the model name (`NAME+vcd`) or `halluc.method`, else the
    server's default (whose parameters the request's own override)."""
    name = options.served_name
    if request.model == name:
        from_model: tuple[str, ...] = ()
    elif request.model.startswith(name + "+") and all(request.model[len(name) + 1:].split("+")):
        from_model = tuple(request.model[len(name) + 1:].split("+"))
    else:
        raise APIError(404, f"model '{request.model}' is not served here; use '{name}' or '{name}+METHOD' "
                            f"(GET /v1/models lists them)", param="model", code="model_not_found")
    extra = dict(request.halluc or {})
    given = extra.pop("method", None)
    asked: tuple[str, ...] = ()
    if given is not None:
        names = [given] if isinstance(given, str) else given if isinstance(given, list) else []  # a number: refused
        if not names or not all(isinstance(m, str) and m for m in names):
            raise APIError(400, "halluc.method must be a method name or a list of names", param="halluc.method")
        asked = tuple(names)
    loaded = {p["name"] for m in api.methods() for p in m["parameters"] if p.get("loads")}
    for key, value in extra.items():
        if key.rsplit(".", 1)[-1] in loaded:  # a request never picks what the server loads from its disk
            raise APIError(400, f"halluc.{key} names a checkpoint this server would load from its own disk; only "
                                f"its operator sets it (halluc serve --param ...)", param=f"halluc.{key}")
        if isinstance(value, list):
            raise APIError(400, f"halluc.{key}: a method parameter must be a number, string or boolean",
                           param=f"halluc.{key}")
    if from_model and asked and from_model != asked:
        raise APIError(400, f"the model name asks for {'+'.join(from_model)} but halluc.method for "
                            f"{'+'.join(asked)}; give one", param="halluc.method")
    method = from_model or asked
    if not method:
        return options.method, {**options.params, **extra}
    return method, extra


def decoding_of(request: ChatCompletionRequest, options: ServeOptions) -> api.Decoding:
    """Greedy when temperature is absent or 0; sampling with temperature, top_p and seed otherwise."""
    if request.max_tokens is not None and request.max_completion_tokens is not None \
            and request.max_tokens != request.max_completion_tokens:
        raise APIError(400, "max_tokens and max_completion_tokens differ; give one", param="max_tokens")
    max_tokens = request.max_completion_tokens or request.max_tokens or options.default_max_tokens
    if max_tokens > options.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}, over this server's limit of {options.max_tokens}",
                       param="max_tokens")
    if not request.temperature:
        return api.Decoding(max_new_tokens=max_tokens)
    return api.Decoding(max_new_tokens=max_tokens, do_sample=True, temperature=request.temperature,
                        top_p=request.top_p if request.top_p is not None else 1.0, seed=request.seed)


def prepare(request: ChatCompletionRequest, options: ServeOptions, model: api.LVLM) -> Work:
    """Every check before the request may join a batch; a HallucError becomes a 400 with its one line."""
    image_url, prompt = read_messages(request, options)
    method, params = choose_method(request, options)
    decoding = decoding_of(request, options)
    try:
        api.check_generation(model, [None], [prompt], list(method), decoding=decoding, **params)
    except HallucError as err:
        raise APIError(400, str(err), param="halluc") from None
    return Work(image_url, prompt, method, params, decoding)
