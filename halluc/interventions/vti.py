"""VTI (Liu, Ye & Zou, ICLR 2025, arXiv 2410.15778): visual and textual intervention by latent steering.

    every MLP output x (decoder layer l; vision layer l, per token):  x' = normalize(normalize(x) + 0.1·α·u_l)·‖x‖

u_l is the unit direction of layer l read once from a calibration set (`halluc.engine.steering`): textual,
mean + first principal axis over records of the last-position hidden state with a correct caption minus
with a hallucinated one; visual, the same over records of the vision encoder's states averaged over
`num_trials` copies with `mask_ratio` of the patches blanked minus the clean image's. Every position, the
prefill and every decode step. Hook points: `layers.{l}.mlp` (α_text > 0) and `vision.layers.{l}.mlp`
(α_image > 0), forward. Cost: two small elementwise ops per layer per token, no extra pass or row; the
vectors are computed once per model and settings (2·num_demos LM forwards and num_demos·(num_trials + 1)
vision-tower forwards) and cached under $HALLUC_CACHE/steering as safetensors.
Families: every family whose vision tower has a list of layers with an MLP and a `patch_size` (all here).

Vectors: `calibration` "" is the default registered calibration set (the toy world's 100 scenes with
captions from their ground truth and copies with 1-3 objects swapped for absent, co-occurring ones),
computed on first use with a one-line note and then cached; a registered name picks another set;
a 64-hex id names a set calibrated with `halluc calibrate vti --data FILE` (`halluc.calibrate`), which
must be in the cache (else one line naming the command).

Paper / code discrepancies and our choices (spec methods-2026 §5):
  - the paper adds shift vectors to the latent states; the code rotates each MLP output toward the
    direction, keeping its norm, with weight 0.1·α. Ours is the code's.
  - the code's direction is mean + PC1 (rank 1, centred SVD, the sign making the largest |score| on it
    positive); the unit axis is small next to the mean, so it is almost the mean shift. Ours is the same.
  - per-token visual directions come from the code's (T, (L_v+1)·d) reinterpretation of each (L_v+1, T, d)
    difference (not a permute), PCA per row; ours reshapes the same way. They need a fixed token count:
    where the vision tower's token count varies with the image (Qwen2-VL, any-res tiles, Pixtral), or a
    forward's count differs from the calibration's, we use the per-layer token-mean direction (the spec's
    choice). LLaVA-1.5's last vision layer's direction is dead (features from layer −2), as in the code.
  - defaults: α_text = α_image = 0.9, 70 demos, 50 trials, 99% masked, seed 42 (the README's MMHal
    command; argparse says α_image 0, α_text 0.8, 50 demos). The code has no POPE/CHAIR settings.
  - the code's demos are COCO train2014 with hand-written hallucinated captions; ours are any user set
    (`--data`) or the toy world's (training scenes, evaluated on validation ones like train2014/val2014).
  - the code masks patches in the normalised pixels of one 336 px image; ours masks the family's
    processed pixels (each tile of any-res input; each flattened patch row of Qwen2-VL).
  - the code casts the output to fp16 and runs batch 1 with beam 5 and no KV cache; ours keeps the model's
    dtype, every mode, any batch (the rotation is per position, so a batch equals each sample alone).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch.nn.functional as F

from halluc.engine.calibration_sets import CALIBRATION_SETS
from halluc.engine.steering import CalibrationSettings, SteeringVectors, is_digest, obtain, steer
from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register


@register
@dataclass(frozen=True)
class VTI(Method):
    """Visual and textual steering of every MLP output.

    Args:
        alpha_text: weight α of the textual direction on decoder MLP outputs (0 = off).
        alpha_image: weight α of the visual direction on vision-tower MLP outputs (0 = off).
        calibration: "" the default calibration set, a registered set's name, or a calibrated set's id.
        num_demos, calibration_seed: how many records are drawn, with which seed.
        num_trials, mask_ratio: masked copies per image and the share of patches masked.
    """

    name = "vti"
    calibrated = True
    paper = "Liu, Ye & Zou, ICLR 2025 (arXiv 2410.15778)"
    formula = "MLP out x ← normalize(normalize(x) + 0.1·α·u_l)·‖x‖, u_l from calibration (text; vision per token)"
    cost = "elementwise per layer and token, no extra pass; vectors computed once per model and cached"

    alpha_text: float = param(0.9, low=0.0, high=10.0, doc="weight of the textual direction (0 = off)")
    alpha_image: float = param(0.9, low=0.0, high=10.0, doc="weight of the visual direction (0 = off)")
    calibration: str = param("", doc="'' = the default calibration set; a set's name or a calibrated id")
    num_demos: int = param(70, low=2, high=10_000, doc="calibration records drawn")
    calibration_seed: int = param(42, low=0, high=2**31 - 1, doc="seed of the draw and of the masks")
    num_trials: int = param(50, low=1, high=1_000, doc="masked copies of each image")
    mask_ratio: float = param(0.99, low=0.0, high=1.0, open_low=True, doc="share of patches masked")

    example_params = {"num_demos": 3, "num_trials": 2}
    zero_params = {"alpha_text": 0.0, "alpha_image": 0.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration and not is_digest(self.calibration) and self.calibration not in CALIBRATION_SETS:
            names = ", ".join(CALIBRATION_SETS.names()) or "none registered"
            raise HallucError(f"vti: parameter 'calibration' must be '' (the default set), a calibration set "
                              f"({names}) or the 64-hex id `halluc calibrate vti` prints; got {self.calibration!r}")

    def is_identity(self) -> bool:
        return self.alpha_text == 0 and self.alpha_image == 0

    def settings(self) -> CalibrationSettings:
        return CalibrationSettings(self.calibration, self.num_demos, self.calibration_seed, self.num_trials,
                                   self.mask_ratio)

    def vectors(self, lvlm) -> SteeringVectors:
        vectors, _ = obtain(self.name, lvlm, self.settings(), note=lambda line: print(f"note: {line}",
                                                                                     file=sys.stderr))
        return vectors

    def hooks(self, session) -> list[HookSpec]:
        if self.is_identity():
            return []
        vectors = self.vectors(session.lvlm)
        layers = session.adapter.num_layers(session.model)
        specs = []
        if self.alpha_text:
            if vectors.text is None or vectors.text.shape[0] != layers:
                raise HallucError(f"vti: the cached textual vectors do not fit this model's {layers} layers")
            units = F.normalize(vectors.text, dim=-1).to(session.lvlm.device)  # (L, d)
            specs += [HookSpec(f"layers.{i}.mlp", self._steer(units[i], self.alpha_text)) for i in range(layers)]
        if self.alpha_image:
            if vectors.vision_mean is None:
                raise HallucError("vti: this model has no visual vectors (its vision config has no patch_size); "
                                  "use alpha_image=0")
            means = F.normalize(vectors.vision_mean, dim=-1).to(session.lvlm.device)  # (L_v, d_v)
            tokens = None if vectors.vision_tokens is None else \
                F.normalize(vectors.vision_tokens, dim=-1).to(session.lvlm.device)  # (L_v, T_v, d_v)
            specs += [HookSpec(f"vision.layers.{i}.mlp", self._steer_vision(means[i], tokens, i))
                      for i in range(means.shape[0])]
        return specs

    def _steer(self, unit, alpha: float):
        def fn(output, ctx):  # output (B, T, d): the MLP's, before the residual add
            return steer(output, unit, alpha)
        return fn

    def _steer_vision(self, mean, tokens, layer: int):
        def fn(output, ctx):  # (N, T_v, d_v) per image or tile, or (P, d_v) flattened patches (Qwen2-VL)
            fixed = tokens is not None and output.dim() == 3 and output.shape[1] == tokens.shape[1]
            return steer(output, tokens[layer] if fixed else mean, self.alpha_image)
        return fn
