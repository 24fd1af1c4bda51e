"""VAR (Kang et al., ICLR 2025, arXiv 2503.03321): visual attention redistribution away from sink tokens.

    sinks (prefill, per layer l):  h̃ = |h_l / rms(h_l)|  (h_l: residual stream entering layer l; no
                                   learned weight, fp32, eps 1e-6);  token j is a sink if
                                   max_{d ∈ D_sink} h̃[j, d] > τ
    selection (every step):       a (head, query) row is image-centric if
                                   Σ_visual sinks a / Σ_image a ≤ ρ   and   Σ_image a ≥ summ
    redistribution (post-softmax): on a selected row the sinks (visual and text, e.g. BOS) give up a
                                   share of their attention, Ω; the non-sink image tokens receive Ω in
                                   proportion to their attention:
                                   a[sink] ← keep·a[sink];  a[j] ← a[j] + Ω·a[j] / Σ_non-sink image a,
                                   Ω = (1 − keep)·Σ_sink a;  the row still sums to 1.

How it runs: a forward pre-hook on each chosen `layers.{l}` sees the hidden state entering layer l.
At the prefill it finds that layer's sinks and writes them (with the image columns, per running
batch row) into layer l's `AttentionEdit`: its `columns` are the image tokens and its
`Redistribution` moves mass from the sinks (`sources`); the layer's attention runs right after, so
the prefill itself is already redistributed, and the same sink columns serve every decode step (the
code stores the indices per layer once). The kernel (`halluc.kernels`) does the per-(head, query)
selection and the redistribution in the attention call. In the prefill only
query rows after the last image token are edited; decode rows always qualify. A layer whose rows
have no sink at all keeps its edit off (plain SDPA).

Sink dimensions D_sink (`sink_dims`): the massive-activation dimensions of the base LLM.
  - "auto" (default): found from the model itself, per row: the dimensions in which the row's first
    token (BOS, or Qwen's <|im_start|>; the classic massive-activation carrier) has h̃ > τ at a chosen
    layer, accumulated over the chosen layers in order. On LLaMA-2-7B the first token's massive
    dimensions are the known 1415 and 2533 (the paper; Sun et al. 2024), which is what "auto" should
    find there (not checked here: no real weights offline). A model with none (e.g. a random tiny
    model) gets no sinks and VAR does nothing. Per row, so a batch gives the same result as each
    sample alone. InstructBLIP's first token is the first Q-Former query (the queries come first).
  - "llama-2-7b" = [2533, 1415] (llava-v1.5-7b), "llama-2-13b" = [2100, 4743] (llava-v1.5-13b,
    llava-v1.6-vicuna-13b): the released `src/logic/constants.py`.
  - an explicit list of dimensions.
Note h̃ ≤ sqrt(hidden size) (all energy in one dimension), so τ = 20 can only fire above ~400 dims.

Cost: no extra forward passes. At the prefill, one fp32 RMS of the residual stream per chosen layer;
at every step, edited attention (post-softmax redistribution) in the chosen layers.

Paper / released code (`seilk/VisAttnSink`, spec §2) and our choices:
  - p: the paper's p is the share of the sinks' attention that is *moved* (the budget Ω "accumulates
    a fraction p"); the released code's p is the share the sinks *keep* (`a[sinks] *= p`, Ω = (1−p)·Σ),
    so its p = 0.6 moves 40%. `variant="paper"` (default) reads p the paper's way (p = 0.6 moves 60%,
    the sinks keep 40%); `variant="code"` reads it the code's way. keep = 1 − p (paper) or p (code);
    keep = 1 (p = 0 paper, p = 1 code) is the identity.
  - ρ: the paper keeps heads whose visual *non*-sink ratio r ≥ ρ; the code keeps rows whose visual
    *sink* share ≤ ρ. `variant="paper"` uses r ≥ ρ (sink share ≤ 1 − ρ), `variant="code"` sink share
    ≤ ρ; the two agree at the default ρ = 0.5. Both select per (head, query) row, as the code does.
  - layers: the code edits layers 2..L−1 (its `except_last_layer: 1` is shadowed by a class
    attribute and never takes effect); the paper skips the last layer. Default: the code's;
    `except_last_layer=True` gives the paper's. An explicit `layers` list overrides both.
  - the sinks that give up attention include text sinks (BOS and any other token with a massive
    activation), as in the code; the sink share used for the selection counts visual sinks only.
  - BOS: the code's LLaVA prompt is tokenised without BOS (`segment_prompt` with
    `add_special_tokens=False`); ours is the HF processor's prompt (with BOS where the family has
    one), which adds BOS as a text sink.
  - batch: the code keeps its state in class attributes (batch 1); ours is per row.

Families: every family (the LLM's own massive activations; image columns from the adapter).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from halluc.engine.steps import check_layers, layer_indices
from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit, Redistribution

SINK_DIMS = {"llama-2-7b": (2533, 1415), "llama-2-13b": (2100, 4743)}  # released src/logic/constants.py
EPS = 1e-6


def normalised(hidden: torch.Tensor) -> torch.Tensor:
    """h̃ = |h / rms(h)| over the last dimension, fp32, eps 1e-6 (RMSNorm without its weight)."""
    h = hidden.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)).abs()


def first_token_dims(h_norm: torch.Tensor, valid: torch.Tensor | None, tau: float) -> torch.Tensor:
    """(B, D) bool: the dimensions in which each row's first real token is massive (h̃ > τ).

    h_norm (B, T, D) normalised hidden state; valid (B, T) bool, False on left padding.
    """
    first = valid.int().argmax(-1) if valid is not None else torch.zeros(h_norm.shape[0], dtype=torch.long)
    return h_norm[torch.arange(h_norm.shape[0], device=h_norm.device), first.to(h_norm.device)] > tau


def find_sinks(h_norm: torch.Tensor, tau: float, dims: tuple[int, ...] | torch.Tensor,
               valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) bool: tokens whose h̃ exceeds τ in a sink dimension.

    dims: a tuple of dimensions (shared by all rows) or a (B, D) bool mask (per row).
    """
    if isinstance(dims, torch.Tensor):
        sinks = ((h_norm > tau) & dims[:, None, :]).any(-1)
    elif dims:
        sinks = (h_norm[..., list(dims)] > tau).any(-1)
    else:
        sinks = torch.zeros(h_norm.shape[:2], dtype=torch.bool, device=h_norm.device)
    return sinks & valid if valid is not None else sinks


def kernel_settings(p: float, rho: float, variant: str) -> tuple[float, float]:
    """(keep, max_source_share) of the kernel's `Redistribution`: the sinks' kept share and the largest
    visual-sink share."""
    return (1.0 - p, 1.0 - rho) if variant == "paper" else (p, rho)


@dataclass
class _State:
    dims: torch.Tensor | None = None  # (rows, D) bool, "auto" only: accumulated sink dimensions
    sinks: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (rows, T) bool (diagnostics)


@register
@dataclass(frozen=True)
class VAR(Method):
    """Visual Attention Redistribution.

    Args:
        p: share of the sinks' attention moved to non-sink image tokens (variant "paper"), or kept
            by the sinks (variant "code"; the released p). Default 0.6 (released config).
        variant: "paper" or "code": how p and rho are read (module docstring).
        tau: massive-activation threshold τ on |h / rms(h)| (20).
        rho: image-centric selection threshold ρ (0.5; see variant).
        summ: least image attention of a selected row (0.2).
        sink_dims: "auto", "llama-2-7b", "llama-2-13b" or a list of hidden dimensions.
        layers: decoder layers to edit; () = 2..L−1 (the code), 2..L−2 with `except_last_layer`.
        except_last_layer: skip the last layer (the paper; the released code edits it).
    """

    name = "var"
    kind = "in-model"
    paper = "Kang et al., ICLR 2025 (arXiv 2503.03321)"
    formula = "sinks: max_d |h/rms(h)|[d] > τ; image-centric rows: sinks' attention → non-sink image ∝ attention"
    cost = "no extra passes; fp32 RMS of the residual per chosen layer at prefill; edited attention in layers 2..L−1"
    p: float = param(0.6, low=0.0, high=1.0, doc="paper: share of sink attention moved; code: share kept")
    variant: str = param("paper", choices=("paper", "code"), doc="how p and rho are read (paper or released code)")
    tau: float = param(20.0, low=0.0, doc="sink threshold on |h/rms(h)| in a sink dimension")
    rho: float = param(0.5, low=0.0, high=1.0, doc="paper: non-sink image ratio >= rho; code: sink share <= rho")
    summ: float = param(0.2, low=0.0, high=1.0, doc="least image attention of an edited (head, query) row")
    sink_dims: str | tuple[int, ...] = param(
        "auto", doc="'auto' (from the model), 'llama-2-7b', 'llama-2-13b' or a list")
    layers: tuple = param((), doc="decoder layers to edit; () = 2..L−1")
    except_last_layer: bool = param(False, doc="skip the last layer (paper); the released code edits it")

    # the tiny models have 2 layers (the default 2..L-1 is empty) and |h/rms(h)| <= sqrt(64) = 8 < τ = 20
    example_params = {"layers": (0, 1), "tau": 2.0}
    zero_params = {"p": 0.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))
        dims = self.sink_dims
        if isinstance(dims, (list, tuple)):
            if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
                raise HallucError(f"var: parameter 'sink_dims' must be 'auto', a preset or a non-empty list of "
                                  f"dimensions >= 0; got {dims!r}")
            object.__setattr__(self, "sink_dims", tuple(dims))
        elif dims != "auto" and dims not in SINK_DIMS:
            raise HallucError(f"var: parameter 'sink_dims' must be 'auto', {', '.join(SINK_DIMS)} or a list of "
                              f"dimensions; got {dims!r}")

    @property
    def keep(self) -> float:
        """Share of a selected row's sink attention the sinks keep (the kernel's `Redistribution.keep`)."""
        return kernel_settings(self.p, self.rho, self.variant)[0]

    def is_identity(self) -> bool:
        return self.keep == 1.0

    def chosen_layers(self, num_layers: int) -> tuple[int, ...]:
        if self.layers:
            return check_layers(self.name, self.layers, num_layers)
        return tuple(range(2, num_layers - 1 if self.except_last_layer else num_layers))

    def dims(self, hidden_size: int) -> tuple[int, ...] | None:
        """The fixed sink dimensions, or None for "auto"."""
        if self.sink_dims == "auto":
            return None
        dims = SINK_DIMS[self.sink_dims] if isinstance(self.sink_dims, str) else self.sink_dims
        if max(dims) >= hidden_size:
            raise HallucError(f"var: sink dimension {max(dims)} is out of range for hidden size {hidden_size} "
                              f"(sink_dims={self.sink_dims!r}); use 'auto' or this model's dimensions")
        return tuple(dims)

    def redistribution(self, sinks: torch.Tensor) -> Redistribution:
        """The kernel's primitive for (rows, T) bool `sinks`, on the edit's columns (the image tokens)."""
        keep, max_share = kernel_settings(self.p, self.rho, self.variant)
        return Redistribution(sinks, keep=keep, max_source_share=max_share, min_mass=self.summ)

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        if self.is_identity():
            return {}
        # sinks are filled in by the prefill hooks; until then (redistribute None) the edit is off
        edits = {layer: AttentionEdit() for layer in self.chosen_layers(session.adapter.num_layers(session.model))}
        session.state[self.name] = (edits, _State())
        return edits

    def hooks(self, session) -> list[HookSpec]:
        if self.is_identity():
            return []
        adapter, model = session.adapter, session.model
        fixed = self.dims(adapter.text_config(model).hidden_size)
        image_mask = session.image_mask  # (B, T): computed here, outside inference mode
        mask = session.inputs.get("attention_mask")
        valid_mask = mask.bool() if mask is not None else None

        def detect(hidden, ctx):  # layers.{l} pre-hook: sinks of layer l, at prefill; hidden (rows, T, D)
            if not ctx.prefill:
                return
            layer = ctx.layer
            edits, state = session.state[self.name]
            rows, length = hidden.shape[:2]
            if length != image_mask.shape[1]:
                raise HallucError(f"var: layer {layer} sees {length} prefill positions but the prompt has "
                                  f"{image_mask.shape[1]}")
            # tensors kept in the edit must be ordinary tensors (the edit cache reads their versions)
            with torch.inference_mode(False), torch.no_grad():
                per = session.layout.per_input(rows)
                image = image_mask.repeat_interleave(per, 0).to(hidden.device)
                valid = valid_mask.repeat_interleave(per, 0).to(hidden.device) if valid_mask is not None else None
                h = normalised(hidden)
                if fixed is None:
                    found = first_token_dims(h, valid, self.tau)
                    state.dims = found if state.dims is None else state.dims | found
                    sinks = find_sinks(h, self.tau, state.dims, valid)
                else:
                    sinks = find_sinks(h, self.tau, fixed, valid)
            state.sinks[layer] = sinks
            edit = edits[layer]
            edit.columns = image
            edit.redistribute = self.redistribution(sinks) if bool(sinks.any()) else None

        return [HookSpec(f"layers.{layer}", detect, kind="forward_pre")
                for layer in self.chosen_layers(adapter.num_layers(model))]
