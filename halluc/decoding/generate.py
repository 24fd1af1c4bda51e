"""`halluc.generate`: prompts + images -> texts, with any stack of methods applied."""
from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import LogitsProcessorList

from halluc.decoding import opera
from halluc.decoding.branches import ORIGINAL, Branch, BranchCombiner, Sampler, build_view_batch
from halluc.decoding.strategy import Decoding
from halluc.errors import HallucError
from halluc.images import load_images
from halluc.interventions import Method, Session, attach, check_compatible, make_methods
from halluc.models.lvlm import LVLM

# Replacement searches by `Method.search` name: (method, session, decoding) -> (custom_generate callable, decoding)
SEARCHES = {"opera": opera.strategy}


@dataclass
class Generation:
    """Texts plus what produced them."""

    texts: list[str]
    tokens: list[list[int]]  # generated token ids per row (padding and EOS removed)
    scores: torch.Tensor | None = None  # (B, steps, V) processed logits per step, when asked for


def generate(lvlm: LVLM, images, prompts, method: str | Sequence[str] = "none", *,
             decoding: Decoding | None = None, params: Mapping[str, Any] | None = None,
             return_scores: bool = False) -> Generation:
    """Generate one answer per (image, prompt) pair with `method` (and any methods entered with `apply`)."""
    images, prompts = pair_inputs(images, prompts)
    decoding = decoding or Decoding()
    if return_scores and decoding.num_beams > 1:
        raise HallucError("return_scores is available for greedy and sampling decoding, not beam search")
    methods = _real(lvlm.active + make_methods(method, params))
    check_compatible(lvlm.family, methods)
    if len(prompts) > 1 and any(m.search for m in methods):  # a replacement search decides per sample
        parts = [generate(lvlm, [i], [p], method, decoding=decoding, params=params, return_scores=return_scores)
                 for i, p in zip(images, prompts)]
        return Generation([t for g in parts for t in g.texts], [t for g in parts for t in g.tokens])
    pil_images = load_images(images)
    owner, branches = _branches(Session(lvlm, {}, images=pil_images, prompts=prompts), methods)
    if branches:
        inputs = build_view_batch(lvlm.adapter, lvlm.processor, pil_images, prompts, branches)
    else:
        inputs = lvlm.adapter.build_inputs(lvlm.processor, pil_images, prompts)
    views = (ORIGINAL, *(b.name for b in branches))
    session = Session(lvlm, _to_device(inputs, lvlm), images=pil_images, prompts=list(prompts), views=views)
    with attach(session, methods) as attached:
        processors, hf_decoding, search = list(attached.logits_processors), decoding, None
        if attached.search:
            searcher = next(m for m in methods if m.search == attached.search)
            search, hf_decoding = SEARCHES[attached.search](searcher, session, decoding)
        if owner is not None:
            combiner, hf_decoding = _combiner(owner, views, decoding, lvlm)
            processors.append(combiner)  # last: it sees every other edit, and may draw the token itself
        output = _hf_generate(lvlm, session.inputs, hf_decoding, processors, return_scores, search)
    return _decode(lvlm, session.inputs, output, return_scores, rows=len(prompts))


def _branches(session: Session, methods: list[Method]) -> tuple[Method | None, list[Branch]]:
    owners = [(m, m.branches(session)) for m in methods]
    owners = [(m, b) for m, b in owners if b]
    if len(owners) > 1:
        names = " and ".join(m.name for m, _ in owners)
        raise HallucError(f"methods {names} each add decoding branches; stack at most one of them")
    return owners[0] if owners else (None, [])


def _combiner(owner: Method, views: tuple[str, ...], decoding: Decoding, lvlm: LVLM):
    if decoding.do_sample and decoding.num_beams > 1:
        raise HallucError(f"method '{owner.name}' supports greedy, sampling or beam search, not beam sampling")
    sampler = Sampler(decoding, lvlm.device) if decoding.do_sample else None
    combiner = BranchCombiner(views, owner.combine, owner.plausibility(), sampler)
    # with our own sampler drawing one token per sample, HF just takes the one-hot's argmax
    return combiner, replace(decoding, do_sample=False) if sampler else decoding


def _hf_generate(lvlm: LVLM, inputs: dict, decoding: Decoding, processors: list, return_scores: bool, search=None):
    model = lvlm.model
    config = decoding.generation_config(model.generation_config, lvlm.processor.tokenizer)
    config.return_dict_in_generate, config.output_scores = True, return_scores
    seed_scope = torch.random.fork_rng(devices=_devices(lvlm)) if decoding.do_sample else contextlib.nullcontext()
    with seed_scope, torch.inference_mode():
        if decoding.do_sample and decoding.seed is not None:
            torch.manual_seed(decoding.seed)
        return model.generate(**inputs, generation_config=config, logits_processor=LogitsProcessorList(processors),
                              custom_generate=search)


def _decode(lvlm: LVLM, inputs: dict, output, return_scores: bool, rows: int) -> Generation:
    """Texts of the first `rows` rows (the original view; branch rows carry the same tokens)."""
    tokenizer = lvlm.processor.tokenizer
    new = output.sequences[:rows, inputs["input_ids"].shape[1]:]  # (B, steps)
    specials = {t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None}
    tokens = [_until_end(row.tolist(), specials) for row in new]
    texts = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
    scores = torch.stack(output.scores, dim=1)[:rows].float().cpu() if return_scores and output.scores else None
    return Generation(texts=texts, tokens=tokens, scores=scores)


def _until_end(ids: list[int], specials: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in specials:
            return ids[:i]
    return ids


def pair_inputs(images, prompts) -> tuple[list, list[str]]:
    """Accept one image or a list, one prompt or a list; a single one is repeated to match the other."""
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if len(images) == 1 and len(prompts) > 1:
        images = images * len(prompts)
    if len(prompts) == 1 and len(images) > 1:
        prompts = prompts * len(images)
    if len(images) != len(prompts):
        raise HallucError(f"got {len(images)} images but {len(prompts)} prompts")
    if not prompts:
        raise HallucError("no prompts given")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise HallucError("empty prompt: every prompt needs some text")
    return images, prompts


def _real(methods: list[Method]) -> list[Method]:
    return [m for m in methods if m.name != "none"]


def _to_device(inputs: dict, lvlm: LVLM) -> dict:
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(lvlm.device)
            if value.is_floating_point():
                value = value.to(lvlm.dtype)
        out[key] = value
    return out


def _devices(lvlm: LVLM) -> list:
    return [lvlm.device] if lvlm.device.type == "cuda" else []
