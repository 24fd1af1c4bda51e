"""`halluc.hf.custom_generate`: a halluc method inside transformers' own `model.generate`.

transformers 5.x accepts a Python callable as `custom_generate`. It prepares the generation (config,
logits processors, stopping criteria, cache) and then calls the callable in place of its decoding loop:

    callable(model, input_ids, logits_processor=..., stopping_criteria=..., generation_config=..., **model_kwargs)

Parameters of the callable's signature that `_sample` does not have are handed over from `generate`'s
keyword arguments untouched. We declare every image input a family's `get_image_features` reads
(`pixel_values`, `image_grid_thw`, ...), so the raw pixels reach us instead of image features that
transformers would have encoded before the loop; then the callable does what `halluc.generate` does with
a batch: it adds the methods' extra views as rows (VCD's noised image, ICD's instruction, PAI's text-only
row), attaches hooks and attention edits, encodes the images and runs the prefill and the decoding loop
inside them, and returns the original view's rows. Tokens equal `halluc.generate`'s on the same inputs
(tested per method and on several families).

    >>> cg = halluc.hf.custom_generate("vcd", processor=processor, alpha=1.0)
    >>> out = model.generate(**processor(text=..., images=[image], return_tensors="pt"), images=[image],
    ...                      custom_generate=cg, max_new_tokens=32)

What a method needs besides the batch is read when it is used, and a missing one is named in one line:

    nothing                          AvisC, CCA, DAMRO, DeCo, DoLa, FarSight, MemVR, ONLY, SID, TAME, VAF, VAR
                                     (hooks and attention edits; AvisC's, DAMRO's and SID's extra view is the
                                     same batch edited inside the model);
                                     the apc control; VTI once its vectors are cached (computing them on
                                     first use reads the processor)
    processor                        the yes-bias and logit-shift controls (the family's Yes/No tokens)
    images, processor                VCD (its noise is keyed by each PIL image's content)
    prompts, processor               VHR, VISTA (a text-only pass), PAI and M3ID (a text-only row)
    images, prompts, processor       ICD (another instruction), RITUAL, AGLA (another image)

`images` are the PIL images (or paths) given to the processor and `prompts` the user texts before the chat
template, one per row, both passed to `model.generate`; `processor` is passed to `custom_generate`.
Methods with extra views run greedy decoding here, the others greedy decoding or sampling; beam search and
OPERA and HALC (which replace the whole search) are refused with one line: use
`halluc.generate(halluc.wrap(model, processor), ...)` for those. So is the yes-prompt control (it rewrites
the prompt text, which arrives here already tokenised: append its sentence to the prompt instead), and
InstructBLIP, whose own `generate` hands transformers' loop (and the callable) its language model alone.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList
from transformers.generation.stopping_criteria import MaxLengthCriteria

from halluc.engine.decoding import Decoding
from halluc.engine.shared_images import distinct_images_once
from halluc.engine.views import ORIGINAL, Branch, ViewLayout, merge_inputs, qualified_view, view_inputs
from halluc.errors import HallucError
from halluc.generation.generate import _combiner, _declared_branches, _vision_tower
from halluc.images import load_images
from halluc.interventions import Method, Request, Session, attach, check_compatible, make_methods
from halluc.modeling.families import adapter_or_generic
from halluc.modeling.lvlm import LVLM

__all__ = ["HallucGenerate", "custom_generate"]

# Every input a supported family's image encoder reads; declared on the callable so that transformers hands
# them over instead of encoding the images before the loop (it pops what the encoder reads, so an input left
# out here would be lost).
IMAGE_INPUTS = ("pixel_values", "image_sizes", "image_grid_thw", "pixel_attention_mask", "qformer_input_ids",
                "qformer_attention_mask", "interpolate_pos_encoding", "batch_num_images", "vision_feature_layer",
                "vision_feature_select_strategy", "vision_aspect_ratio")
_READS_ONLY_CONFIG = {"kwargs", "return_dict"}


def custom_generate(method: str | Sequence[str], *, processor: Any = None, **params) -> HallucGenerate:
    """A callable for `model.generate(..., custom_generate=...)` that applies `method` (one method, a list,
    or a stack "vhr+vcd") with `params` (`alpha=1`, or dotted `**{"vcd.alpha": 1}` when stacked).

    `processor` (the model's processor) is needed by methods that build an extra view of the sample or a
    text-only pass (see the module docstring); methods acting inside the model need nothing else.
    Parameters are validated here, before any generation."""
    names = [n for part in ([method] if isinstance(method, str) else method) for n in part.split("+")]
    methods = [m for m in make_methods(names, dict(params)) if m.name != "none"]
    searching = [m.name for m in methods if m.replaces_search]
    if searching:
        raise HallucError(f"method '{searching[0]}' replaces transformers' whole search (its own beams), so it "
                          "cannot run as custom_generate; use halluc.generate(halluc.wrap(model, processor), ...)")
    rewriting = [m.name for m in methods if m.kind == "prompt"]
    if rewriting:
        raise HallucError(f"method '{rewriting[0]}' rewrites the prompt text, which custom_generate receives "
                          "already tokenised: add its sentence to your prompt, or use "
                          "halluc.generate(halluc.wrap(model, processor), ...)")
    return HallucGenerate(tuple(methods), processor)


class HallucGenerate:
    """The callable `custom_generate` returns (see the module docstring). One object can serve many calls."""

    def __init__(self, methods: tuple[Method, ...], processor: Any = None):
        self.methods = methods
        self.processor = processor

    def __repr__(self) -> str:
        return f"custom_generate({'+'.join(m.name for m in self.methods) or 'none'})"

    def __call__(self, model, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList,
                 stopping_criteria: StoppingCriteriaList, generation_config, synced_gpus: bool = False,
                 streamer=None, images=None, prompts=None, **model_kwargs):
        _check_vision_language(model)
        _check_encoder_inputs(model)
        given = {k: model_kwargs.pop(k) for k in IMAGE_INPUTS if k in model_kwargs}
        given = {k: v for k, v in given.items() if v is not None}
        lvlm, request, declared = self._plan(model, input_ids, generation_config, images, prompts)
        session, width = self._session(lvlm, request, declared, input_ids, given, model_kwargs)
        _shift_max_length(stopping_criteria, generation_config, session.inputs["input_ids"].shape[1] - width)
        with attach(session, list(self.methods)) as attached:
            processors = LogitsProcessorList([*logits_processor, *attached.logits_processors])
            if declared:
                combiner, _ = _combiner(declared, session.layout, request.decoding, lvlm)
                processors.append(combiner)  # last, as in halluc.generate
            loop_kwargs = _prepared(model, session.inputs, model_kwargs, generation_config, lvlm)
            output = type(model)._sample(model, loop_kwargs.pop("input_ids"), logits_processor=processors,
                                         stopping_criteria=stopping_criteria, generation_config=generation_config,
                                         synced_gpus=synced_gpus, streamer=streamer, **loop_kwargs)
        return _original_rows(output, input_ids.shape[0], session.inputs["input_ids"].shape[1] - width)

    # transformers hands over the generate() keywords that this signature names and `_sample`'s does not:
    # `images`, `prompts` and the raw image inputs, which it would otherwise encode (and drop) before the loop
    __signature__ = inspect.Signature(
        [p for p in inspect.signature(__call__).parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in IMAGE_INPUTS]
        + [inspect.Parameter("model_kwargs", inspect.Parameter.VAR_KEYWORD)])

    def _plan(self, model, input_ids, generation_config, images, prompts):
        """The model as an LVLM, the Request (what is missing stands in as `_Missing`), the declared views."""
        names = "+".join(m.name for m in self.methods)
        processor = self.processor if self.processor is not None else _Missing(names, "processor", _HOW["processor"])
        lvlm = LVLM(model=model, processor=processor, adapter=adapter_or_generic(model),
                    name=getattr(model.config, "_name_or_path", "") or type(model).__name__)
        check_compatible(lvlm.adapter, self.methods)
        rows, decoding = input_ids.shape[0], _decoding_of(generation_config)
        request = Request(lvlm, _images(images, rows, names), _prompts(prompts, rows, names), decoding)
        declared = _declared_branches(request, list(self.methods))
        self._check_needs(declared, decoding, generation_config)
        return lvlm, request, declared

    def _session(self, lvlm, request, declared, input_ids, given: dict, model_kwargs: dict) -> tuple[Session, int]:
        """The batch with its views (the given rows first) as the methods' Session, and the given width."""
        model_kwargs.pop("mm_encoder_outputs", None)  # nothing was encoded: we hold the pixels
        model_kwargs.pop("position_ids", None)  # recomputed for the whole batch (and with the image grids)
        attention_mask = model_kwargs.pop("attention_mask", None)
        original = {"input_ids": input_ids,
                    "attention_mask": attention_mask if attention_mask is not None else torch.ones_like(input_ids),
                    **given,
                    **{k: model_kwargs.pop(k) for k in ("mm_token_type_ids", "token_type_ids") if k in model_kwargs}}
        branches = [replace(b, name=qualified_view(m.name, b.name)) for m, own in declared for b in own]
        inputs = self._view_batch(lvlm, request, original, branches)
        layout = ViewLayout((ORIGINAL, *(b.name for b in branches)), input_ids.shape[0])
        return Session(request, inputs, layout), input_ids.shape[1]

    def _check_needs(self, declared, decoding: Decoding, generation_config) -> None:
        if decoding.mode == "beam" or (generation_config.num_return_sequences or 1) > 1:
            raise HallucError("halluc's custom_generate runs greedy decoding and sampling (one sequence per input); "
                              "for beam search use halluc.generate(halluc.wrap(model, processor), ..., num_beams=N)")
        for m in self.methods:
            if decoding.mode not in m.modes:
                raise HallucError(f"method '{m.name}' supports {', '.join(m.modes)} decoding, not {decoding.mode}")
        if declared and decoding.do_sample:
            names = ", ".join(m.name for m, _ in declared)
            raise HallucError(f"method '{names}' decodes extra views: with custom_generate it runs greedy "
                              "decoding; for sampling use halluc.generate(..., do_sample=True, seed=S)")

    def _view_batch(self, lvlm: LVLM, request: Request, original: dict, branches: list[Branch]) -> dict:
        """The given batch plus every branch's rows, left-padded to one width (as `build_view_batch`)."""
        if not branches:
            return original
        parts = [original]
        for branch in branches:
            if branch.with_image and branch.image is None and branch.prompt is None and branch.system is None:
                part = dict(original)
                if branch.pixels is not None:
                    part["pixel_values"] = branch.pixels(original["pixel_values"])
            else:
                part = view_inputs(lvlm.adapter, lvlm.processor, request.images, request.prompts, branch)
                part = _like(part, original)
            parts.append(part)
        return merge_inputs(parts, pad_token_id=_pad_id(lvlm))


def _check_vision_language(model) -> None:
    """Refuse a text-only model: a family whose own `generate` calls its language model's (InstructBLIP
    encodes the image, then calls `language_model.generate`) hands us that language model, without the image."""
    if getattr(model.config, "vision_config", None) is None:
        raise HallucError(f"custom_generate was called on {type(model).__name__}, a model without a vision tower: "
                          "a family whose generate() calls its language model's generate (InstructBLIP) cannot "
                          "use it; use halluc.generate(halluc.wrap(model, processor), ...)")


def _check_encoder_inputs(model) -> None:
    """Refuse a model whose image encoder reads an input not declared on the callable (it would be lost)."""
    encoder = getattr(model.base_model, "get_image_features", None)
    if encoder is not None:
        unknown = set(inspect.signature(encoder).parameters) - set(IMAGE_INPUTS) - _READS_ONLY_CONFIG
        if unknown:
            raise HallucError(f"{type(model).__name__}'s image encoder reads {', '.join(sorted(unknown))}, which "
                              "halluc's custom_generate does not know; use halluc.generate(halluc.wrap(...)) instead")


def _decoding_of(config) -> Decoding:
    """halluc's Decoding for transformers' prepared GenerationConfig (the mode decides what runs)."""
    return Decoding(max_new_tokens=max(1, config.max_new_tokens or 1), do_sample=bool(config.do_sample),
                    num_beams=int(config.num_beams or 1))


_HOW = {"processor": "pass processor= to halluc.hf.custom_generate",
        "images": "pass images=[...] (the PIL images or paths given to the processor, one per row) to model.generate",
        "prompts": "pass prompts=[...] (the user texts before the chat template, one per row) to model.generate"}


class _Missing:
    """Stands for an input the caller did not pass; a method that reads it stops with one line saying how to
    pass it (what each method reads is only known when it runs: VCD reads the images, VHR the prompts)."""

    def __init__(self, methods: str, what: str, how: str):
        self._message = f"custom_generate({methods}) needs the {what}: {how}"

    def _refuse(self, *args, **kwargs):
        raise HallucError(self._message)

    __getattr__ = __iter__ = __getitem__ = __len__ = __bool__ = _refuse


class _MissingList(_Missing, list):
    """`_Missing` where a list is expected (the Request's images and prompts)."""

    __iter__ = __getitem__ = __len__ = __bool__ = _Missing._refuse


def _images(images, rows: int, names: str) -> list:
    if images is None:
        return _MissingList(names, "images", _HOW["images"])
    images = load_images(list(images) if isinstance(images, (list, tuple)) else [images])
    if len(images) != rows:
        raise HallucError(f"custom_generate got {len(images)} images for a batch of {rows} rows; pass one per row")
    return images


def _prompts(prompts, rows: int, names: str) -> list[str]:
    if prompts is None:
        return _MissingList(names, "prompts", _HOW["prompts"])
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if len(prompts) != rows:
        raise HallucError(f"custom_generate got {len(prompts)} prompts for a batch of {rows} rows; pass one per row")
    return prompts


def _like(part: dict, original: dict) -> dict:
    """A processor output moved to the batch's device, floating tensors in the batch's pixel dtype."""
    device = original["input_ids"].device
    dtype = original["pixel_values"].dtype if original.get("pixel_values") is not None else None
    out = {}
    for key, value in part.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point() and dtype is not None:
                value = value.to(dtype)
        out[key] = value
    return out


def _pad_id(lvlm: LVLM) -> int:
    """The tokenizer's pad id (the fill only matters when a view's prompt is wider: those need the processor)."""
    if not isinstance(lvlm.processor, _Missing) and lvlm.processor.tokenizer.pad_token_id is not None:
        return lvlm.processor.tokenizer.pad_token_id
    return int(lvlm.model.generation_config.pad_token_id or 0)


def _shift_max_length(criteria: StoppingCriteriaList, config, extra: int) -> None:
    """Wider inputs (a branch's longer prompt, left-padded) keep the same number of new tokens."""
    if extra <= 0:
        return
    config.max_length += extra
    for criterion in criteria:
        if isinstance(criterion, MaxLengthCriteria):
            criterion.max_length += extra


def _prepared(model, inputs: Mapping[str, Any], model_kwargs: dict, config, lvlm: LVLM) -> dict:
    """What `generate` prepares between the inputs and its loop, for the batch with its views: the attention
    mask (dropped when it is all ones, as `generate` does), position ids (the model's own rule: Qwen's
    multimodal positions need the image grids), then the image encoding, under the methods' hooks."""
    kwargs = {**model_kwargs, **{k: v for k, v in inputs.items() if k != "input_ids"}}
    input_ids = inputs["input_ids"]
    kwargs["position_ids"] = model._prepare_position_ids_for_generation(input_ids, {**kwargs,
                                                                                   "input_ids": input_ids})
    if (kwargs["attention_mask"] == 1).all():
        config._mask_length = kwargs["attention_mask"].shape[1]
        kwargs["attention_mask"] = None
    with distinct_images_once(_vision_tower(lvlm)):
        kwargs = model._maybe_prepare_encoder_kwargs_for_generation(input_ids, kwargs, "input_ids", config)
    return {"input_ids": input_ids, **kwargs}


def _original_rows(output, rows: int, extra: int):
    """The original view's rows, without the left padding the views added (the user's input width)."""
    def cut(t):
        return t[:rows] if t is not None else None

    if isinstance(output, torch.Tensor):
        return output[:rows, extra:]
    output.sequences = output.sequences[:rows, extra:]
    for name in ("scores", "logits"):
        value = getattr(output, name, None)
        if value is not None:
            setattr(output, name, tuple(cut(v) for v in value))
    for name in ("attentions", "hidden_states"):
        if getattr(output, name, None) is not None:
            setattr(output, name, None)  # per-layer tuples over the whole view batch: not sliced, dropped
    if getattr(output, "past_key_values", None) is not None:
        output.past_key_values = None
    return output
