"""Templated captions that list exactly the visible objects, with counts ("two cups and a bowl").

Object words are the COCO node words (or their plurals), so CHAIR's synonym table maps every mention
back to its category; place words (kitchen, street, park, ...) are not COCO objects and never count.
"""
from __future__ import annotations

import random
import re
from collections import Counter

from halluc.world.scenes import Scene
from halluc.world.vocab import BY_NAME, CATEGORIES

_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
_PLACES = {"kitchen": ("kitchen",), "street": ("street", "city street"), "living room": ("living room",),
           "park": ("park", "sunny park"), "office": ("office",)}
_TEMPLATES = (
    "{a_place} with {things}.",
    "{things} in {a_place}.",
    "A photo of {a_place} with {things}.",
    "There {be} {things} in this {place}.",
    "This {place} has {things}.",
)
_SURFACES = ("dining table", "couch", "bench")   # "... on a dining table": the brief's canonical phrasing
_SURFACE_TEMPLATES = ("{a_place} with {things} on {a_surface}.", "{things} on {a_surface} in {a_place}.")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def count_phrase(name: str, n: int) -> str:
    """`a cup`, `an umbrella`, `two knives`."""
    return f"{article(name)} {name}" if n == 1 else f"{_NUMBERS[n]} {BY_NAME[name].plural}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption(scene: Scene, rng: random.Random, min_visibility: float) -> str:
    """One caption naming every object at least `min_visibility` visible, with counts, in random order."""
    counts = Counter(o.category for o in scene.visible(min_visibility))
    place = rng.choice(_PLACES[scene.kind])
    a_place = f"{article(place)} {place}"
    names = list(counts)
    rng.shuffle(names)
    surfaces = [n for n in names if n in _SURFACES and counts[n] == 1]
    if surfaces and len(names) > 1 and rng.random() < 0.5:
        surface = surfaces[0]
        things = _join([count_phrase(n, counts[n]) for n in names if n != surface])
        text = rng.choice(_SURFACE_TEMPLATES).format(a_place=a_place, things=things,
                                                     a_surface=f"{article(surface)} {surface}")
    else:
        things = _join([count_phrase(n, counts[n]) for n in names])
        be = "is" if counts[names[0]] == 1 else "are"
        text = rng.choice(_TEMPLATES).format(place=place, a_place=a_place, things=things, be=be)
    return text[0].upper() + text[1:]


_FORMS = {form: c.name for c in CATEGORIES for form in (c.name, c.plural)}
_FORM_RE = "|".join(re.escape(f) for f in sorted(_FORMS, key=len, reverse=True))
_COUNTED = re.compile(rf"\b(a|an|{'|'.join(_NUMBERS.values())})\s+({_FORM_RE})\b", re.IGNORECASE)
_BARE = re.compile(rf"\b({_FORM_RE})\b", re.IGNORECASE)


def parse_caption(text: str) -> Counter:
    """Category -> count of the objects a caption of this module mentions ("two cups" -> cup: 2).

    Raises if an object word appears without a count, i.e. the text is not in this module's grammar.
    """
    counts: Counter = Counter()
    for number, form in _COUNTED.findall(text):
        counts[_FORMS[form.lower()]] += 1 if number.lower() in ("a", "an") else _word_to_int(number)
    bare = len(_BARE.findall(text))
    if bare != len(_COUNTED.findall(text)):
        raise ValueError(f"caption has object words without a count: {text!r}")
    return counts


def _word_to_int(word: str) -> int:
    return {v: k for k, v in _NUMBERS.items()}[word.lower()]
