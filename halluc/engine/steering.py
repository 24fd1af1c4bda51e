"""Steering vectors read from a calibration set, kept on disk, and the rotation that applies them (VTI).

    records = CALIBRATION_SETS.get("world")()             # a plugin's default set, or the user's records
    vectors = compute_vectors(lvlm, sample_records(records, 70, 42), vision=True, num_trials=50,
                              mask_ratio=0.99, seed=42)
    save_vectors(path, vectors, identity); load_vectors(path, identity)
    x' = steer(x, unit_direction, alpha)                  # in a hook on an MLP output

Textual vectors (L, d): per calibration record, the language model's last-position hidden states
h_0..h_L of the prompt followed by the good caption minus those with the hallucinated caption;
mean + first principal axis over the records; entries 1..L, one per decoder layer's MLP.
Visual vectors: per record, the vision encoder's hidden states (entry 0 = the first layer's input, then
each layer's output) averaged over `num_trials` copies of the image with `mask_ratio` of its patches
set to the image's per-channel mean, minus those of the clean image. Per token (L_v, T_v, d_v) when every
record gives the same token count, and always per layer as the token mean (L_v, d_v), for towers whose
token count varies with the image (Qwen2-VL, any-res tiles, Pixtral).

Nothing here imports a calibration set: plugins register theirs in `CALIBRATION_SETS` (the toy world
registers "world"), and the API passes the user's records in.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from halluc.engine.calibration_sets import CALIBRATION_SETS, CalibrationRecord
from halluc.errors import HallucError
from halluc.safe_paths import confined

FORMAT = 1  # bump when the stored tensors or their meaning change (the cache key includes it)
STEER_SCALE = 0.1  # the code's fixed weight of the direction against the unit MLP output


@dataclass(frozen=True)
class SteeringVectors:
    text: torch.Tensor | None  # (L, d) fp32, one per decoder layer
    vision_tokens: torch.Tensor | None  # (L_v, T_v, d_v) fp32, one per vision layer and token; None: it varies
    vision_mean: torch.Tensor | None  # (L_v, d_v) fp32, the per-layer token-mean direction


# ---------------------------------------------------------------- the formulas

def steer(x: torch.Tensor, unit: torch.Tensor, alpha: float) -> torch.Tensor:
    """x' = normalize(normalize(x) + 0.1·α·u)·‖x‖ over the last axis, in fp32; `unit` broadcasts against x."""
    x32 = x.float()
    norm = x32.norm(dim=-1, keepdim=True)
    return (F.normalize(F.normalize(x32, dim=-1) + STEER_SCALE * alpha * unit, dim=-1) * norm).to(x.dtype)


def principal_direction(deltas: torch.Tensor) -> torch.Tensor:
    """(B, N, D) differences, N records per row -> (B, D): the row mean plus its unit first principal axis,
    signed so that the record with the largest |score| on it scores positive (the code's `svd_flip`)."""
    mean = deltas.mean(1, keepdim=True)  # (B, 1, D)
    u, _, vh = torch.linalg.svd(deltas - mean, full_matrices=False)  # u (B, N, k), vh (B, k, D)
    top = u[..., :1].abs().argmax(1, keepdim=True)  # (B, 1, 1): the record with the largest |score|
    sign = torch.sign(torch.gather(u[..., :1], 1, top))  # (B, 1, 1)
    return (mean + sign * vh[:, :1]).squeeze(1)


def sample_records(records: Sequence[CalibrationRecord], n: int, seed: int) -> list[CalibrationRecord]:
    """`random.sample` after seeding, as the code draws its demos (n capped at what there is)."""
    return random.Random(seed).sample(list(records), min(n, len(records)))


def records_digest(records: Sequence[CalibrationRecord]) -> str:
    """The content hash of a calibration set: every image's pixels and every text, in order."""
    sha = hashlib.sha256()
    for r in records:
        image = r.image.convert("RGB")
        sha.update(json.dumps([image.size, r.question, r.good, r.hallucinated]).encode())
        sha.update(image.tobytes())
    return sha.hexdigest()


def masked_pixels(pixels: torch.Tensor, patch: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """A copy of processed `pixels` with `ratio` of the patches of each image set to its per-channel mean.
    (…, C, H, W) images: patches of `patch`×`patch` pixels; (P, C·…) flattened patches (Qwen2-VL): rows."""
    out = pixels.clone()
    if pixels.dim() == 2:  # one row per patch, channels first in the row
        rows = out.view(out.shape[0], -1)
        channels = out.view(out.shape[0], 3, -1)  # (P, C, k)
        mean = channels.float().mean((0, 2)).to(out.dtype)  # (C,)
        chosen = torch.randperm(rows.shape[0], generator=generator)[:int(ratio * rows.shape[0])]
        channels[chosen] = mean[None, :, None]
        return out
    images = out.view(-1, *out.shape[-3:])  # (N, C, H, W)
    h, w = images.shape[-2] // patch, images.shape[-1] // patch
    for image in images:
        chosen = torch.zeros(h * w, dtype=torch.bool)
        chosen[torch.randperm(h * w, generator=generator)[:int(ratio * h * w)]] = True
        cover = chosen.view(h, w).repeat_interleave(patch, 0).repeat_interleave(patch, 1)  # (h·p, w·p)
        cover = F.pad(cover, (0, image.shape[-1] - w * patch, 0, image.shape[-2] - h * patch))  # (H, W)
        mean = image.float().mean((1, 2)).to(image.dtype)  # (C,)
        image.copy_(torch.where(cover, mean[:, None, None], image))
    return out


# ---------------------------------------------------------------- computing

@contextlib.contextmanager
def _vision_states(lvlm) -> Iterator[list]:
    """Record the vision encoder's states of each forward: entry 0 the first layer's input, then every
    layer's output, each flattened to (tokens, d)."""
    layers = lvlm.adapter.vision_layers(lvlm.model)
    seen: list = []

    def first(module, args, kwargs):
        seen.clear()
        seen.append(args[0] if args else kwargs["hidden_states"])

    def each(module, args, output):
        seen.append(output[0] if isinstance(output, tuple) else output)

    handles = [layers[0].register_forward_pre_hook(first, with_kwargs=True)]
    handles += [layer.register_forward_hook(each) for layer in layers]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _last_positions(lvlm) -> Iterator[list]:
    """Record the last position of the language model's h_0 … h_L in each forward (transformers'
    `hidden_states`: each layer's input, then the final norm's output), as (d,) fp32 CPU tensors."""
    adapter, model = lvlm.adapter, lvlm.model
    count = adapter.num_layers(model)
    seen: list = []

    def keep(tensor):
        seen.append(tensor[0, -1].detach().float().cpu())

    def layer_input(module, args, kwargs):
        if module is first:
            seen.clear()
        keep(args[0] if args else kwargs["hidden_states"])

    first = adapter.resolve(model, "layers.0")
    handles = [adapter.resolve(model, f"layers.{i}").register_forward_pre_hook(layer_input, with_kwargs=True)
               for i in range(count)]
    handles.append(adapter.resolve(model, "norm").register_forward_hook(lambda m, a, out: keep(out)))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _stacked(seen: list) -> torch.Tensor:
    """(L_v + 1, tokens, d) fp32 on the CPU from the recorded states (tiles and batch flattened)."""
    return torch.stack([s.detach().float().reshape(-1, s.shape[-1]).cpu() for s in seen])


def patch_size(model) -> int | None:
    """The vision tower's patch side in pixels, or None when its config does not say (no visual vectors)."""
    patch = getattr(getattr(model.config, "vision_config", None), "patch_size", None)
    return None if patch is None else int(patch[0] if isinstance(patch, (tuple, list)) else patch)


@torch.no_grad()
def compute_vectors(lvlm, records: Sequence[CalibrationRecord], *, vision: bool, num_trials: int, mask_ratio: float,
                    seed: int) -> SteeringVectors:
    """The steering vectors of `lvlm` from `records` (already sampled); see the module docstring."""
    adapter, processor = lvlm.adapter, lvlm.processor
    generator = torch.Generator().manual_seed(seed)
    patch = patch_size(lvlm.model) if vision else None
    if vision and patch is None:
        raise HallucError(f"{type(lvlm.model).__name__}: its vision config has no patch_size to mask patches by")
    text_deltas, vision_deltas = [], []
    for r in records:
        last, clean = [], None
        with _vision_states(lvlm) as seen, _last_positions(lvlm) as states:
            for caption in (r.good, r.hallucinated):
                lvlm.model(**lvlm.inputs_for_model(adapter.build_inputs(processor, [r.image], [r.question],
                                                                        answers=[caption])), use_cache=False)
                last.append(torch.stack(states))  # (L + 1, d): h_0 … h_L at the last position
                clean = _stacked(seen) if patch is not None and clean is None else clean  # the clean image's
        text_deltas.append(last[0] - last[1])
        if patch is not None:
            inputs = lvlm.inputs_for_model(adapter.build_inputs(processor, [r.image], [r.question]))
            with _vision_states(lvlm) as seen:
                masked = _masked_states(lvlm, inputs, seen, num_trials, patch, mask_ratio, generator)
            assert clean is not None  # the first caption pass recorded it (patch is set)
            vision_deltas.append(masked - clean)  # (L_v + 1, T, d_v)
    text_vectors = principal_direction(torch.stack(text_deltas).flatten(1)[None])[0].view_as(text_deltas[0])[1:]
    tokens = mean = None
    if vision:
        layers, d = vision_deltas[0].shape[0], vision_deltas[0].shape[-1]
        means = torch.stack([v.mean(1) for v in vision_deltas])  # (N, L_v + 1, d_v)
        mean = principal_direction(means.flatten(1)[None])[0].view(layers, d)[1:]
        if len({v.shape for v in vision_deltas}) == 1:
            count = vision_deltas[0].shape[1]
            # the code's (T, (L_v+1)·d) view of each (L_v+1, T, d) difference: a reinterpretation, not a permute
            rows = torch.stack([v.reshape(count, -1) for v in vision_deltas], dim=1)  # (T, N, (L_v+1)·d)
            tokens = principal_direction(rows).reshape(layers, count, d)[1:]
    return SteeringVectors(text_vectors, tokens, mean)


# inputs a vision tower runs from alone (no image sizes or grids to pass it): the tower is called directly
_TOWER_ALONE = frozenset({"input_ids", "attention_mask", "pixel_values", "token_type_ids", "qformer_input_ids",
                          "qformer_attention_mask"})


def _masked_states(lvlm, inputs: dict, seen: list, trials: int, patch: int, ratio: float,
                   generator: torch.Generator) -> torch.Tensor:
    """(L_v + 1, T, d_v): the vision states averaged over `trials` masked copies of the one image in `inputs`:
    the vision tower alone on all copies at once when it runs from the pixels alone ((1, C, H, W)), else the
    whole model on one copy at a time."""
    pixels = inputs["pixel_values"]
    copies = [masked_pixels(pixels, patch, ratio, generator) for _ in range(trials)]
    if pixels.dim() == 4 and pixels.shape[0] == 1 and set(inputs) <= _TOWER_ALONE:
        lvlm.adapter.resolve(lvlm.model, "vision")(torch.cat(copies))
        states = _stacked(seen)  # (L_v + 1, trials·T, d_v)
        return states.view(states.shape[0], trials, -1, states.shape[-1]).mean(1)
    return torch.stack([_run(lvlm.model, {**inputs, "pixel_values": c}, seen) for c in copies]).mean(0)


def _run(model, inputs: dict, seen: list) -> torch.Tensor:
    model(**inputs, use_cache=False)
    return _stacked(seen)


# ---------------------------------------------------------------- the cache

def cache_home() -> Path:
    """Where computed vectors are kept: $HALLUC_CACHE/steering, else ~/.cache/halluc/steering."""
    root = os.environ.get("HALLUC_CACHE") or Path.home() / ".cache" / "halluc"
    return Path(root) / "steering"


def cache_path(method: str, identity: dict) -> Path:
    """The file of the vectors with `identity` (a hash names it: nothing from input chooses the place)."""
    key = hashlib.sha256(json.dumps({**identity, "format": FORMAT}, sort_keys=True, default=str).encode())
    home = cache_home()
    return confined(home, f"{method}-{key.hexdigest()[:32]}.safetensors", f"{method} vectors cache")


def save_vectors(path: Path, vectors: SteeringVectors, identity: dict) -> None:
    """Write atomically (a reader never sees half a file), with `identity` as JSON metadata."""
    from safetensors.torch import save_file

    tensors = {name: t.contiguous() for name, t in (("text", vectors.text), ("vision_tokens", vectors.vision_tokens),
                                                    ("vision_mean", vectors.vision_mean)) if t is not None}
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(partial), metadata={"identity": json.dumps(identity, sort_keys=True, default=str)})
        os.replace(partial, path)
    except OSError as err:
        with contextlib.suppress(OSError):  # nothing written, or nowhere to write it
            partial.unlink()
        raise HallucError(f"cannot write the vectors cache in {path.parent} ({err.strerror or err}); set "
                          "$HALLUC_CACHE to a writable folder") from None


def load_vectors(path: Path, identity: dict) -> SteeringVectors | None:
    """The vectors stored at `path` for `identity`; None when there is no such file; one line when it is
    unreadable or holds another identity (a corrupt or foreign file is never used)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    fix = "delete it and run `halluc calibrate` again"
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = json.loads((f.metadata() or {}).get("identity", "null"))
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as err:  # safetensors raises its own error types, and JSON its own
        reason = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
        raise HallucError(f"the vectors cache file {path} is corrupt ({reason}); {fix}") from None
    if stored != json.loads(json.dumps(identity, sort_keys=True, default=str)):
        raise HallucError(f"the vectors cache file {path} holds vectors of another model or calibration; {fix}")
    if not set(tensors) <= {"text", "vision_tokens", "vision_mean"} or \
            any(t.dtype != torch.float32 or not t.isfinite().all() for t in tensors.values()):
        raise HallucError(f"the vectors cache file {path} holds unexpected tensors; {fix}")
    return SteeringVectors(tensors.get("text"), tensors.get("vision_tokens"), tensors.get("vision_mean"))


def weights_fingerprint(lvlm) -> str:
    """What identifies the weights: the loaded revision (a hub commit, an offline model's recipe) or, when
    none is known (a local folder, a wrapped model), the content hash of every parameter, once per model."""
    if lvlm.revision:
        return f"{lvlm.name}@{lvlm.revision}"
    known = _FINGERPRINTS.get(lvlm.model)
    if known is not None:
        return known
    sha = hashlib.sha256()
    for name, tensor in lvlm.model.state_dict().items():
        sha.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        sha.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    _FINGERPRINTS[lvlm.model] = "sha256:" + sha.hexdigest()
    return _FINGERPRINTS[lvlm.model]


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> fingerprint, while it lives


# ---------------------------------------------------------------- finding or making a model's vectors

DIGEST_LENGTH = 64  # a user calibration set is named by the sha256 of its contents


@dataclass(frozen=True)
class CalibrationSettings:
    """What decides the vectors besides the model: the set (a registered name, "" for the default one, or a
    user set's content digest) and how it is read."""

    calibration: str
    num_demos: int
    seed: int
    num_trials: int
    mask_ratio: float


def is_digest(name: str) -> bool:
    return len(name) == DIGEST_LENGTH and all(c in "0123456789abcdef" for c in name)


def default_set() -> str:
    """The registered calibration set used when none is named (the first registered: the toy world's)."""
    names = CALIBRATION_SETS.names()
    if not names:
        raise HallucError("no calibration set is registered; calibrate on your own images with `halluc calibrate "
                          "vti --model MODEL --data FILE.jsonl` and pass the calibration id it prints")
    return names[0]


def identity_of(method: str, lvlm, settings: CalibrationSettings, digest: str) -> dict:
    return {"method": method, "weights": weights_fingerprint(lvlm), "dtype": str(lvlm.dtype).removeprefix("torch."),
            "family": lvlm.family, "calibration": digest, "num_demos": settings.num_demos, "seed": settings.seed,
            "num_trials": settings.num_trials, "mask_ratio": settings.mask_ratio}


_MEMORY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(method, settings): (vectors, path)}


def _calibration_set(settings: CalibrationSettings, records: Sequence[CalibrationRecord] | None
                     ) -> tuple[str | None, list[CalibrationRecord] | None, str]:
    """(registered set name or None, its records or the user's or None (a user set known by digest), digest)."""
    if records is None and is_digest(settings.calibration):
        return None, None, settings.calibration
    name = None if records is not None else settings.calibration or default_set()
    records = list(records) if records is not None else CALIBRATION_SETS.get(str(name))()
    return name, records, records_digest(records)


def records_used(settings: CalibrationSettings, records: Sequence[CalibrationRecord] | None = None) -> int | None:
    """How many records the vectors under `settings` are computed from; None for a user set known by digest."""
    _, chosen, _ = _calibration_set(settings, records)
    return None if chosen is None else min(settings.num_demos, len(chosen))


def obtain(method: str, lvlm, settings: CalibrationSettings, records: Sequence[CalibrationRecord] | None = None,
           note: Callable[[str], None] | None = None) -> tuple[SteeringVectors, Path]:
    """`lvlm`'s vectors under `settings`: from memory, else from the cache, else computed and cached.

    `records` is a user's calibration set (its digest must be `settings.calibration`); without it a named or
    default set is read from its provider, and a user set missing from the cache is refused in one line.
    `note` is told, in one line, when vectors are computed.
    """
    remembered = _MEMORY.setdefault(lvlm.model, {})
    if (method, settings) in remembered:
        return remembered[(method, settings)]
    name, records, digest = _calibration_set(settings, records)
    identity = identity_of(method, lvlm, settings, digest)
    path = cache_path(method, identity)
    vectors = load_vectors(path, identity)
    if vectors is None:
        if records is None:
            raise HallucError(f"{method}: no vectors of calibration set {digest[:12]}… for this model and these "
                              f"settings; run `halluc calibrate {method} --model MODEL --data FILE` with the same "
                              "options first")
        chosen = sample_records(records, settings.num_demos, settings.seed)
        if note is not None:
            what = f"the '{name}' calibration set" if name else "your calibration set"
            ahead = f"; `halluc calibrate {method}` does this ahead" if name else ""
            note(f"{method}: computing steering vectors of {lvlm.name} on {what} ({len(chosen)} records, once; "
                 f"cached in {path.parent}{ahead})")
        vectors = compute_vectors(lvlm, chosen, vision=patch_size(lvlm.model) is not None,
                                  num_trials=settings.num_trials,
                                  mask_ratio=settings.mask_ratio, seed=settings.seed)
        save_vectors(path, vectors, identity)
    remembered[(method, settings)] = (vectors, path)
    return vectors, path
