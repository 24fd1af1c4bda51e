"""`halluc.generate`: prompts + images -> texts, with any stack of methods applied.

One call: build the Request, ask every method for its branches, lay the views out in one batch,
attach hooks / attention edits / processors / a replacement search, run transformers' generate,
and decode the original view's rows.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import LogitsProcessorList

from halluc.engine.combine import BranchCombiner, Combination
from halluc.engine.decoding import Decoding
from halluc.engine.sampler import Sampler
from halluc.engine.shared_images import distinct_images_once
from halluc.engine.views import ORIGINAL, Branch, ViewLayout, build_view_batch, qualified_view
from halluc.engine.yes_no import EvidenceRecorder, YesNoTokens
from halluc.errors import HallucError
from halluc.images import load_images
from halluc.interventions import Method, Request, Session, attach, check_compatible, make_methods
from halluc.interventions.registry import MethodChoice
from halluc.limits import MAX_BATCH, MAX_PROMPT_CHARS
from halluc.modeling.lvlm import LVLM
from halluc.modeling.placeholders import check_user_text, model_placeholders


@dataclass
class Generation:
    """Texts plus what produced them."""

    texts: list[str]
    tokens: list[list[int]]  # generated token ids per row (padding and EOS removed)
    scores: torch.Tensor | None = None  # (B, steps, V) processed logits per step, when asked for
    evidence: list[dict | None] | None = None  # yes/no answer evidence per row, when asked for (`yes_no`)


def generate(lvlm: LVLM, images, prompts, method: MethodChoice = "none", *,
             decoding: Decoding | None = None, params: Mapping[str, Any] | None = None,
             return_scores: bool = False, yes_no: bool = False) -> Generation:
    """Generate one answer per (image, prompt) pair with `method` (and any methods entered with `apply`).

    `yes_no`: also record each row's yes/no evidence at the first step (`halluc.engine.yes_no`); it changes
    no score and no token. A method with its own search (OPERA) records none: its processors see
    candidate subsets, not the vocabulary."""
    images, prompts = pair_inputs(images, prompts)
    decoding = decoding or Decoding()
    if return_scores and decoding.num_beams > 1:
        raise HallucError("return_scores is available for greedy and sampling decoding, not beam search")
    methods = [m for m in lvlm.active + make_methods(method, params) if m.name != "none"]
    check_applied_once(methods)
    check_compatible(lvlm.adapter, methods)
    check_modes(methods, decoding)
    _check_placeholders(lvlm, prompts)
    check_context(lvlm, decoding.max_new_tokens)
    # a search that decides per sample runs one sample at a time; a batched one only alone (it drops finished
    # samples' rows, which a stacked method's per-row state would not follow)
    if len(prompts) > 1 and any(m.replaces_search and not (m.batched_search and len(methods) == 1) for m in methods):
        parts = [generate(lvlm, [i], [p], method, decoding=decoding, params=params, return_scores=return_scores)
                 for i, p in zip(images, prompts)]
        return Generation([t for g in parts for t in g.texts], [t for g in parts for t in g.tokens],
                          evidence=[None] * len(prompts) if yes_no else None)
    prompts = rewritten_prompts(methods, prompts)
    request = Request(lvlm, load_images(images), list(prompts), decoding)
    declared = _declared_branches(request, methods)
    branches = [replace(b, name=qualified_view(m.name, b.name)) for m, own in declared for b in own]
    if branches:
        inputs = build_view_batch(lvlm.adapter, lvlm.processor, request.images, request.prompts, branches)
    else:
        inputs = lvlm.adapter.build_inputs(lvlm.processor, request.images, request.prompts)
    check_context(lvlm, decoding.max_new_tokens, prompt_tokens=inputs["input_ids"].shape[1])
    layout = ViewLayout((ORIGINAL, *(b.name for b in branches)), len(prompts))
    session = Session(request, lvlm.inputs_for_model(inputs), layout)
    tokens = YesNoTokens.of(lvlm.processor.tokenizer) if yes_no else None
    recorder = EvidenceRecorder(tokens, len(prompts), decoding.num_beams) if tokens else None
    with attach(session, methods) as attached:
        processors, hf_decoding = list(attached.logits_processors), decoding
        if attached.search is not None:
            hf_decoding, recorder = attached.search.decoding(decoding), None
        if declared:
            combiner, hf_decoding = _combiner(declared, layout, decoding, lvlm)
            combiner.recorder = recorder  # it sees the combination before and after the cutoff
            processors.append(combiner)  # last: it sees every other edit, and may draw the token itself
        elif recorder is not None:
            processors.append(recorder)  # last: what the model decodes from, read and left unchanged
        output = _hf_generate(lvlm, session.inputs, hf_decoding, processors, return_scores, attached.search)
    result = _decode(lvlm, session.inputs, output, return_scores, rows=len(prompts))
    if yes_no:
        result.evidence = recorder.evidence() if recorder else [None] * len(prompts)
    return result


def rewritten_prompts(methods: Sequence[Method], prompts: Sequence[str]) -> list[str]:
    """The prompts after every method's `rewrite_prompt`, in stacking order (the yes-prompt control)."""
    out = list(prompts)
    for m in methods:
        out = [m.rewrite_prompt(p) for p in out]
    return out


def check_modes(methods: Sequence[Method], decoding: Decoding) -> None:
    """Refuse a decoding mode a method does not define (e.g. sampling with OPERA's beam search)."""
    for m in methods:
        if decoding.mode not in m.modes:
            raise HallucError(f"method '{m.name}' supports {', '.join(m.modes)} decoding, not {decoding.mode}")


def check_applied_once(methods: Sequence[Method]) -> None:
    """Refuse a method applied twice, e.g. `apply(m, "vcd")` around `generate(m, ..., method="vcd")`, as
    `method=["vcd", "vcd"]` is: its contribution would count twice."""
    names = [m.name for m in methods if m.name != "none"]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise HallucError(f"method '{twice}' is applied twice (by apply() and by generate(), or nested apply() "
                          f"blocks): {', '.join(names)}")


def context_length(lvlm: LVLM) -> int | None:
    """How many positions the language model was built for (its config's max_position_embeddings)."""
    config = lvlm.model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_context(lvlm: LVLM, max_new_tokens: int, prompt_tokens: int = 0) -> None:
    """Refuse a generation that cannot fit the model's context: `max_new_tokens` alone, or with the prompt."""
    context = context_length(lvlm)
    if context is None or prompt_tokens + max_new_tokens <= context:
        return
    asked = f"{prompt_tokens} prompt tokens + {max_new_tokens}" if prompt_tokens else f"{max_new_tokens}"
    raise HallucError(f"max_new_tokens: {asked} new tokens exceed {lvlm.name}'s context of {context} positions; "
                      f"ask for at most {max(context - prompt_tokens, 0)} new tokens")


def _check_placeholders(lvlm: LVLM, prompts: Sequence[str]) -> None:
    """The model's own placeholders (a generic model's processor may declare others than every family's)."""
    if not lvlm.adapter.family.startswith("generic"):
        return  # its placeholders are among every family's, checked with the prompts
    extra = model_placeholders(lvlm.processor)
    for i, prompt in enumerate(prompts, 1):
        check_user_text(prompt, f"prompt {i}", extra)


def _declared_branches(request: Request, methods: list[Method]) -> list[tuple[Method, list[Branch]]]:
    declared = [(m, m.branches(request)) for m in methods]
    declared = [(m, own) for m, own in declared if own or (m.cutoff_alone and m.plausibility_cutoff())]
    alone = [m.name for m, _ in declared if not m.additive]
    if len(declared) > 1 and alone:
        others = ", ".join(m.name for m, _ in declared if m.name != alone[0])
        raise HallucError(f"method '{alone[0]}' combines its views in a way that cannot be summed with other "
                          f"branch methods ({others}); use it alone")
    return declared


def _combiner(declared: list[tuple[Method, list[Branch]]], layout: ViewLayout, decoding: Decoding, lvlm: LVLM):
    if decoding.do_sample and decoding.num_beams > 1:
        names = ", ".join(m.name for m, _ in declared)
        raise HallucError(f"method '{names}' supports greedy, sampling or beam search, not beam sampling")
    combinations = [Combination(m.name, {b.name: qualified_view(m.name, b.name) for b in own}, m.combine,
                                m.plausibility_cutoff_for(decoding), m.stepped) for m, own in declared]
    sampler = Sampler(decoding, lvlm.device) if decoding.do_sample else None
    combiner = BranchCombiner(layout.views, combinations, sampler)
    # with our own sampler drawing one token per sample, HF just takes the one-hot's argmax
    return combiner, replace(decoding, do_sample=False) if sampler else decoding


def _hf_generate(lvlm: LVLM, inputs: dict, decoding: Decoding, processors: list, return_scores: bool, search=None):
    model = lvlm.model
    config = decoding.generation_config(model.generation_config, lvlm.processor.tokenizer)
    config.return_dict_in_generate, config.output_scores = True, return_scores
    seed_scope = torch.random.fork_rng(devices=_devices(lvlm)) if decoding.do_sample else contextlib.nullcontext()
    with seed_scope, torch.inference_mode(), distinct_images_once(_vision_tower(lvlm)):
        if decoding.do_sample and decoding.seed is not None:
            torch.manual_seed(decoding.seed)
        return model.generate(**inputs, generation_config=config, logits_processor=LogitsProcessorList(processors),
                              custom_generate=search)


def _vision_tower(lvlm: LVLM):
    """The tower that `distinct_images_once` watches, or None (a family that declares none)."""
    return lvlm.adapter.resolve(lvlm.model, "vision") if lvlm.adapter.paths.vision_tower else None


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
    if len(prompts) > MAX_BATCH:
        raise HallucError(f"{len(prompts)} (image, prompt) pairs in one call; at most {MAX_BATCH} run as one batch: "
                          "split the list")
    for i, p in enumerate(prompts, 1):
        if not isinstance(p, str):
            raise HallucError(f"a prompt must be a string, got {type(p).__name__} ({p!r})")
        if not p.strip():
            raise HallucError("empty prompt: every prompt needs some text")
        if len(p) > MAX_PROMPT_CHARS:
            raise HallucError(f"prompt {i} has {len(p)} characters; at most {MAX_PROMPT_CHARS}")
        check_user_text(p, f"prompt {i}")
    return images, prompts


def _devices(lvlm: LVLM) -> list:
    """The CUDA devices whose RNG a sampling call may draw from (all of a dispatched model's)."""
    return [d for d in lvlm.devices if d.type == "cuda"]
