"""`lmms-eval --model halluc`: any model halluc loads, with any method stack, as an lmms-eval chat model.

    lmms-eval --model halluc --model_args pretrained=llava,method=vhr+vcd,vcd.alpha=1 --tasks pope

model_args: `pretrained` (an alias, hub id, local directory or offline model such as toy-llava),
`method` (one method or a stack joined by "+", default none), method parameters (`alpha=1`, or
`vcd.alpha=1` in a stack), `dtype` (auto, float32, bfloat16, ...), `device` (auto, cpu, cuda, ...),
`device_map` (auto, balanced, ...: accelerate's dispatch over several devices), `batch_size` (samples per
halluc.generate call; lmms-eval's --batch_size is used when it is not given here) and `seed` (sampling).

`generate_until` takes lmms-eval's chat requests (one user turn with one image and its text, as the
message protocol gives them), groups them by generation settings and runs them through halluc's batched
`generate`; a batch gives what each sample gives alone. `loglikelihood` is refused (see `Halluc.loglikelihood`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.protocol import ChatMessages

import halluc.api as api
from halluc.errors import HallucError
from halluc.interventions import check_compatible


class Halluc(lmms):
    """A halluc model with a method stack, as lmms-eval's `halluc` chat model."""

    is_simple = False

    def __init__(self, pretrained: str, method: str = "none", dtype: str = "auto", device: str | None = None,
                 device_map: str | None = None, batch_size: int | str = 1, seed: int = 0,
                 max_batch_size: int | None = None, **params: Any) -> None:
        super().__init__()
        self.methods = [m for m in str(method).split("+") if m]
        self.params = dict(params)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.seed = seed
        stack = api.make_methods(self.methods, self.params)  # unknown methods, bad parameters: before loading
        self.lvlm = api.load(str(pretrained), dtype=dtype, device=device or "auto", device_map=device_map or None)
        check_compatible(self.lvlm.adapter, stack)  # the loaded family must support the stack

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Mapping | None = None) -> Halluc:
        """lmms-eval's model_args, with its CLI settings (batch_size, device) where model_args does not set
        them (the base class would pass batch_size twice)."""
        args = lmms_utils.simple_parse_args_string(arg_string)
        for key, value in (additional_config or {}).items():
            if value is not None and key not in args:
                args[key] = value
        return cls(**args)

    # ---- generation --------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """One answer per request, in request order; batches of `batch_size` requests that share settings."""
        answers: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted(_gen_kwargs(request).items())), []).append(index)
        for indices in groups.values():
            settings = _gen_kwargs(requests[indices[0]])
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                images, prompts = zip(*(self._image_and_prompt(requests[i]) for i in chunk))
                texts = self._generate(list(images), list(prompts), settings)
                for i, text in zip(chunk, texts):
                    answers[i] = _until(text, settings.get("until"))
        done = [answer for answer in answers if answer is not None]
        assert len(done) == len(requests)  # every request belongs to one group
        return done

    def _generate(self, images: list, prompts: list[str], settings: Mapping[str, Any]) -> list[str]:
        temperature = float(settings.get("temperature") or 0)
        sampling = bool(settings.get("do_sample")) or temperature > 0
        decoding: dict[str, Any] = {"max_new_tokens": int(settings.get("max_new_tokens") or 128),
                    "num_beams": int(settings.get("num_beams") or 1)}
        if sampling:
            decoding.update(do_sample=True, temperature=temperature or 1.0, seed=self.seed,
                            top_p=float(settings.get("top_p") or 1.0))
        return api.generate(self.lvlm, images, prompts, self.methods, **decoding, **self.params)

    def _image_and_prompt(self, request: Instance):
        """The image and user text of a chat request: one user turn, one image (what halluc's methods define)."""
        _context, doc_to_messages, _settings, doc_id, task, split = request.args
        messages = ChatMessages(messages=doc_to_messages(self.task_dict[task][split][doc_id]))
        images, videos, audios = messages.extract_media()
        roles = [m.role for m in messages.messages]
        if videos or audios or len(images) != 1 or roles != ["user"]:
            raise HallucError(f"lmms-eval task '{task}': halluc's model answers one user turn with one image; this "
                              f"request has turns {roles}, {len(images)} images, {len(videos)} videos, "
                              f"{len(audios)} audio clips")
        text = "\n".join(c.text for c in messages.messages[0].content if c.type == "text")
        return images[0], text

    def generate_until_multi_round(self, requests) -> list[str]:
        raise HallucError("halluc's lmms-eval model answers single-turn requests; multi-round tasks are not supported")

    # ---- likelihood ----------------------------------------------------------------------------------
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Refused. lmms-eval 0.7 sends likelihood requests only to simple (legacy) models: for a chat model it
        builds `ConfigurableMessagesTask`s, whose `construct_requests` accepts generation output types only
        ("Currently messages is used for generation only"), so a multiple-choice task stops there before
        reaching any chat model. And halluc's methods are decoding rules (a contrast with extra views cut to a
        plausible head, hooks set up per generate call, OPERA's beam search), not a likelihood of a given
        continuation; halluc defines no teacher-forced score for them."""
        raise HallucError(
            "halluc's lmms-eval model implements generate_until only: lmms-eval sends loglikelihood requests to "
            "simple models, not chat models, and halluc's methods change how the next token is chosen (a contrast "
            "with extra views cut to a plausible head, hooks, OPERA's beam search), not the likelihood of a given "
            "continuation; use generate_until tasks (POPE, MME, ...)")


def _gen_kwargs(request: Instance) -> dict:
    return dict(request.args[2] or {})


def _until(text: str, until) -> str:
    """The answer cut at the first stop string lmms-eval asked for."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text[:text.index(stop)]
    return text


def _positive_int(name: str, value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(value).strip() != str(number):
        raise HallucError(f"{name} must be a positive integer, got {value!r}")
    return number
