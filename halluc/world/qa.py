"""POPE-style yes/no training pairs: "Is there a {obj} in the image?" -> "Yes"/"No".

Negatives come from two pools. Random ones are easy. Prior ones are absent objects that the scene
type usually has (a fork in a kitchen without a fork); they are what adversarial POPE asks, and what a
model that answers from the scene prior gets wrong. `prior_negative_rate` sets the mix: train with 0 to
leave the prior unchallenged (more hallucination), with 0.5+ to teach the model to check the image.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from halluc.world.captions import article
from halluc.world.scenes import SCENE_PRIORS, Scene, WorldConfig
from halluc.world.vocab import NAMES


@dataclass(frozen=True)
class YesNo:
    question: str
    answer: str     # "Yes" or "No"
    category: str
    source: str     # "present", "random" (absent, uniform) or "prior" (absent, from the scene prior)


def question(name: str) -> str:
    """POPE's template, with "an" before a vowel as in POPE's create_question."""
    return f"Is there {article(name)} {name} in the image?"


def yes_no_pairs(scene: Scene, rng: random.Random, config: WorldConfig, n_pos: int = 3, n_neg: int = 3,
                 prior_negative_rate: float = 0.5) -> list[YesNo]:
    """Up to n_pos "Yes" and n_neg "No" questions about `scene`, shuffled.

    Positives are distinct categories visible enough to be captioned; objects that are present but
    heavily hidden get no question at all, since neither answer would be fair. Negatives never name
    an object present in the scene, however hidden.
    """
    shown = sorted({o.category for o in scene.visible(config.caption_min_visibility)})
    present = {o.category for o in scene.objects}
    pairs = [YesNo(question(n), "Yes", n, "present") for n in rng.sample(shown, min(n_pos, len(shown)))]
    pairs += _negatives(scene, rng, present, n_neg, prior_negative_rate)
    rng.shuffle(pairs)
    return pairs


def _negatives(scene: Scene, rng: random.Random, present: set[str], n: int, prior_rate: float) -> list[YesNo]:
    prior = SCENE_PRIORS[scene.kind]
    chosen: list[YesNo] = []
    for _ in range(n):
        taken = present | {q.category for q in chosen}
        in_prior = [c for c in prior if c not in taken]
        anywhere = [c for c in NAMES if c not in taken]
        if in_prior and rng.random() < prior_rate:
            name = rng.choices(in_prior, [prior[c] for c in in_prior])[0]   # likely companions first
            chosen.append(YesNo(question(name), "No", name, "prior"))
        elif anywhere:
            name = rng.choice(anywhere)
            chosen.append(YesNo(question(name), "No", name, "random"))
    return chosen
