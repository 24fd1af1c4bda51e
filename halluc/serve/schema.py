"""The request schema of /v1/chat/completions (pydantic, strict JSON types) and OpenAI-style errors."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from halluc.serve.options import MAX_SEED

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
Scalar = str | int | float | bool


class APIError(Exception):
    """An HTTP error answered with OpenAI's body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class ImageURL(BaseModel):
    model_config = STRICT
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted for compatibility; the processor decides


class TextPart(BaseModel):
    model_config = STRICT
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    model_config = STRICT
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(BaseModel):
    model_config = STRICT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's chat completion request that halluc honours; the others it cannot honour
    (n > 1, stop, penalties, logprobs, tools) are refused when set to anything but their no-op value."""

    model_config = STRICT
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)  # 0 or absent: greedy; > 0: sampling
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    user: str | None = None
    halluc: dict[str, Scalar | list[str]] | None = None  # {"method": "vcd", "vcd.alpha": 1}: extra_body


# field -> (the value that asks for nothing, why halluc cannot honour anything else)
NO_OPS = {"n": (1, "one choice per request"), "stop": ([], "no stop sequences"),
          "presence_penalty": (0, "no penalties"), "frequency_penalty": (0, "no penalties"),
          "logprobs": (False, "no log-probabilities")}


def parse_request(body: bytes) -> ChatCompletionRequest:
    """The validated request, or a 400 naming the first bad field."""
    try:
        request = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "json_invalid":
            raise APIError(400, f"request body is not valid JSON: {first['msg']}") from None
        if first["type"] == "extra_forbidden":
            raise APIError(400, f"unsupported field '{where}'", param=where) from None
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise APIError(400, message, param=where or None) from None
    for name, (no_op, why) in NO_OPS.items():
        value = getattr(request, name)
        if value is not None and value != no_op and value != "":
            raise APIError(400, f"{name}={value!r} is not supported: halluc serve gives {why}", param=name)
    return request
