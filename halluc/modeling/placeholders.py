"""User text that holds an image placeholder is refused, for every family at once.

A processor turns its placeholder (`<image>`, `<|image_pad|>`, `[IMG]`, ...) into image positions, so a
prompt, a benchmark question or a method's text (ICD's disturbance) holding one would ask for an image
that was never given: the processor fails mid-call, or the model reads text as pixels. halluc refuses
such text in one line, whatever model runs it, so a question set is valid for every family or for none.
The family records declare their placeholders (`Family.placeholders`); a model wrapped with the generic
adapter adds its processor's own (`model_placeholders`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from halluc.errors import HallucError
from halluc.modeling.registry import families

# attributes of a processor or tokenizer that name the text of an image or video position
_TOKEN_ATTRIBUTE = re.compile(r"^(?!.*_ids?$)\w*(image|video|img|vision|boi|eoi)\w*token$")


@lru_cache(maxsize=1)
def _family_patterns() -> tuple[tuple[str, re.Pattern], ...]:
    found: dict[str, re.Pattern] = {}
    for record in families():
        for entry in record.placeholders:
            if entry not in found:
                pattern = entry[3:] if entry.startswith("re:") else re.escape(entry)
                found[entry] = re.compile(pattern)
    return tuple(found.items())


def image_placeholders() -> list[str]:
    """Every family's placeholders (`re:` marks a pattern, e.g. Idefics3's `<row_R_col_C>`)."""
    return [entry for entry, _ in _family_patterns()]


def model_placeholders(processor) -> tuple[str, ...]:
    """The image / video token texts a processor (or its tokenizer) declares, for a generic model."""
    found = []
    for owner in (processor, getattr(processor, "tokenizer", None)):
        for name in dir(owner) if owner is not None else ():
            if _TOKEN_ATTRIBUTE.match(name):
                try:
                    value = getattr(owner, name)
                except Exception:  # a property that needs state the processor lacks
                    continue
                if isinstance(value, str) and value.strip():
                    found.append(value)
    return tuple(dict.fromkeys(found))


def placeholder_in(text: str, extra: Iterable[str] = ()) -> str | None:
    """The first placeholder `text` holds, or None."""
    for entry, pattern in _family_patterns():
        match = pattern.search(text)
        if match:
            return match.group(0)
    return next((token for token in extra if token in text), None)


def check_user_text(text: str, where: str, extra: Iterable[str] = ()) -> None:
    """Refuse `text` (named by `where`, e.g. "prompt 2") when it holds an image placeholder."""
    found = placeholder_in(text, extra)
    if found is not None:
        raise HallucError(f"{where} contains {found!r}, a model's image placeholder: an image is passed separately "
                          "and placed by halluc; remove it from the text")
