"""`halluc.load`: aliases, hub ids, local directories and offline tiny models -> an LVLM."""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from halluc.errors import HallucError, unknown_choice
from halluc.kernels.backend import BACKEND, register_backend
from halluc.modeling.families import adapter_for, adapter_or_generic, load_processor, model_class_for
from halluc.modeling.lvlm import LVLM
from halluc.modeling.placeholders import model_placeholders
from halluc.modeling.registry import checkpoints, model_names, offline_models


def load(name_or_path: str | os.PathLike, *, dtype: str | torch.dtype = "auto", device: str = "auto",
         revision: str | None = None, seed: int = 0, device_map: str | dict | None = None,
         offload_folder: str | os.PathLike | None = None) -> LVLM:
    """Load a vision-language model with its processor and family adapter.

    `name_or_path`: an alias (`halluc.models()`), a `tiny-*` model (random weights built offline
    from `seed`), a local directory saved with `save_pretrained`, or a hub id `owner/name`.
    `device_map` ("auto", "balanced", ... or {module: device}) spreads the model over several devices
    with accelerate instead of moving it to `device`; "disk" entries are offloaded to `offload_folder`
    (a temporary folder when not given). The language model's attention runs on halluc's backend,
    which equals SDPA until a method edits it.
    """
    name = str(name_or_path)
    target = _resolve_device(device)
    _resolve_dtype(dtype, target)  # a bad dtype is refused for every kind of model
    register_backend()
    offline = offline_models().get(name)
    if offline is not None:
        offline.check()
        model, processor = offline.load(seed)
        lvlm_revision: str | None = offline.revision(seed)
        if dtype != "auto":  # offline models are built in float32; an explicit dtype converts them
            model = model.to(_resolve_dtype(dtype, target))
        if device_map is not None:
            model = dispatch(model, device_map, offload_folder)
    else:
        source = _resolve_source(name)
        dtype = _resolve_dtype(dtype, target if device_map is None else _accelerator())
        model, processor = _load_pretrained(name, source, revision, dtype, device_map, offload_folder)
        lvlm_revision = revision or _commit_of(model)
    if device_map is None:
        model = model.to(target)
    return LVLM(model=model.eval(), processor=processor, adapter=adapter_for(model), name=name,
                revision=lvlm_revision)


def wrap(model, processor, *, name: str | None = None, revision: str | None = None) -> LVLM:
    """The LVLM halluc.load would give, around a model the user loaded themselves: any dtype, any
    `device_map` (accelerate's dispatch, several GPUs), quantised weights transformers supports.

    The adapter is the family record's, or, for a model type no record knows, the generic adapter
    (image positions only; `halluc.available_methods(lvlm)` lists what runs on it). The model's own
    attention implementation is kept: methods that edit attention switch the language model to
    halluc's backend only while they run. The model is put in eval mode (dropout off).
    """
    _check_wrapped_model(model)
    if processor is None or not hasattr(processor, "tokenizer"):
        raise HallucError("halluc.wrap needs the model's processor (with its tokenizer), e.g. "
                          "AutoProcessor.from_pretrained(...)")
    adapter = adapter_or_generic(model)
    _check_processor_matches(model, processor, adapter.family)
    register_backend()
    return LVLM(model=model.eval(), processor=processor, adapter=adapter,
                name=name or getattr(model.config, "_name_or_path", None) or type(model).__name__,
                revision=revision or _commit_of(model))


def _check_wrapped_model(model) -> None:
    """A transformers model with a config and `generate`, not a name, a path or a bare module."""
    if isinstance(model, (str, os.PathLike)):
        raise HallucError(f"halluc.wrap takes a loaded model, got the {type(model).__name__} {str(model)!r}: use "
                          "halluc.load(name) for a name or a directory")
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "generate") or \
            not isinstance(getattr(config, "model_type", None), str):
        raise HallucError(f"halluc.wrap takes a transformers vision-language model (a PreTrainedModel with a config "
                          f"and generate), got {type(model).__name__}")


def _check_processor_matches(model, processor, family: str) -> None:
    """Refuse a processor of another model: a processor class another family uses, an image token that is not
    this family's or does not carry the model's id, or a vocabulary larger than the model's embeddings."""
    from halluc.modeling.registry import families

    tokenizer = processor.tokenizer
    owner = f"{type(processor).__name__} does not belong to this {type(model).__name__}"
    given = {c.__name__ for c in type(processor).__mro__}
    claimed = {f.name: _processor_names(f.processor_class) for f in families()}
    known = family in claimed  # a generic model may well use a known family's processor class (a LLaVA derivative)
    if known and any(given & names for names in claimed.values()) and not given & claimed[family]:
        other = next(name for name, names in claimed.items() if given & names)
        raise HallucError(f"{owner}: it is a {other} processor, the model is {family}; pass the processor of the "
                          "same checkpoint")
    image_token = getattr(processor, "image_token", None)
    expected = next((f.placeholders for f in families() if f.name == family), ())
    if isinstance(image_token, str) and expected and image_token not in expected:
        raise HallucError(f"{owner}: its image token {image_token!r} is not {family}'s ({', '.join(expected)}); "
                          "pass the processor of the same checkpoint")
    config = model.config
    token_id = getattr(config, "image_token_id", None)
    token_id = token_id if token_id is not None else getattr(config, "image_token_index", None)
    texts = [t for t in (*model_placeholders(processor), *expected) if not t.startswith("re:")]
    ids = {tokenizer.convert_tokens_to_ids(t) for t in texts}
    if ids and isinstance(token_id, int) and token_id not in ids:
        raise HallucError(f"{owner}: none of its image tokens ({', '.join(texts)}) has the model's image token id "
                          f"{token_id}; pass the processor of the same checkpoint")
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise HallucError(f"{owner}: its tokenizer has {len(tokenizer)} tokens, the model's embeddings {rows}; "
                          "pass the processor of the same checkpoint")


def _processor_names(cls: str | type) -> set[str]:
    """A family's processor class and the stock classes it stands for (halluc's image-only copies included)."""
    if isinstance(cls, str):
        return {cls}
    names = {c.__name__ for c in cls.__mro__ if c.__name__.endswith("Processor") and c.__name__ != "ProcessorMixin"}
    return names | {n.replace("ImageOnly", "") for n in names}


def dispatch(model, device_map: str | dict, offload_folder: str | os.PathLike | None = None):
    """`model` spread over devices with accelerate's hooks (each module's weights moved to its device,
    "cpu" and "disk" entries offloaded and streamed in per call); a string map is inferred."""
    from accelerate import dispatch_model, infer_auto_device_map

    placement: dict = infer_auto_device_map(model, no_split_module_classes=model._no_split_modules or []) \
        if isinstance(device_map, str) else device_map
    if "disk" in placement.values() and offload_folder is None:
        offload_folder = tempfile.mkdtemp(prefix="halluc-offload-")
    return dispatch_model(model, device_map=placement, offload_dir=offload_folder)


def check_model_name(name: str) -> None:
    """Raise the same error `load` would for a name that cannot be a model, without loading anything."""
    offline = offline_models().get(name)
    if offline is not None:
        offline.check()
    else:
        _resolve_source(name)


def _resolve_source(name: str) -> str:
    if name in checkpoints():
        return checkpoints()[name][1].hub_id
    if Path(name).is_dir():
        return name
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise HallucError(f"model directory not found: {name}")
    if "/" in name and not Path(name).exists() and not name.startswith((".", "/")):
        return name  # looks like a hub id
    if Path(name).exists():
        raise HallucError(f"model path '{name}' is not a directory saved with save_pretrained")
    raise unknown_choice("model", name, model_names())


def _load_pretrained(name: str, source: str, revision: str | None, dtype: torch.dtype, device_map=None,
                     offload_folder=None):
    from transformers import AutoConfig

    # without a reachable hub, read the local cache only: transformers would otherwise retry each file
    # for about 40 s and print a dozen lines before failing
    local: dict[str, Any] = {"local_files_only": True} if not Path(source).is_dir() and not hub_reachable() else {}
    local["trust_remote_code"] = False  # never run a checkpoint's own Python: only families halluc knows load
    try:
        config = AutoConfig.from_pretrained(source, revision=revision, **local)
        model_class_for(config)  # an unsupported model type is refused before any download
        processor = load_processor(source, config, revision=revision, **local)
        placement = {} if device_map is None else {"device_map": device_map, "offload_folder": offload_folder}
        model = model_class_for(config).from_pretrained(
            source, revision=revision, dtype=dtype,  # type: ignore[arg-type]  # typed str; None: default branch
            attn_implementation=attn_implementation_for(config),
            **placement, **local)
    except OSError as err:
        raise HallucError(_not_available(name, source, err)) from None
    return model, processor


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be asked for files: not when HF_HUB_OFFLINE is set, nor when its host
    does not answer a TCP connection within `timeout` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", ""):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError:
        return False
    return True


def _not_available(name: str, source: str, err: Exception) -> str:
    if Path(source).is_dir():
        return f"cannot load model '{name}' from {source}: {str(err).splitlines()[0]}"
    return (f"cannot load model '{name}' ({source}): its weights are neither in the local Hugging Face cache "
            f"nor downloadable here. Download them where there is a network (`hf download {source}`) and point "
            f"HF_HOME at that cache, or pass the local directory instead of '{name}'.")


def load_dtype(name: str, dtype: str | torch.dtype = "auto", device: str = "auto") -> torch.dtype:
    """The dtype `load(name, dtype=..., device=...)` gives the weights, without loading anything."""
    if dtype == "auto" and str(name) in offline_models():
        return torch.float32  # offline models are built in float32
    return _resolve_dtype(dtype, _resolve_device(device))


def check_device_and_dtype(device: str, dtype: str | torch.dtype) -> None:
    """The errors `load` would give for a device or dtype, without loading anything."""
    _resolve_dtype(dtype, _resolve_device(device))


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return _accelerator()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise HallucError(f"unknown device '{device}'; use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise HallucError(f"device '{device}' asked for, but CUDA is not available on this machine; use --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise HallucError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return resolved


def _accelerator() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise unknown_choice("dtype", dtype, [*table, "auto"])
    return table[dtype]


def _commit_of(model) -> str | None:
    return getattr(model.config, "_commit_hash", None)


def attn_implementation_for(config) -> dict[str, str]:
    """halluc's backend for the language model, SDPA for every other sub-model (vision, Q-Former)."""
    return {**{key: "sdpa" for key in getattr(config, "sub_configs", {})}, "text_config": BACKEND}

