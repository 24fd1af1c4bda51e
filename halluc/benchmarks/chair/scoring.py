"""CHAIR (Rohrbach et al., EMNLP 2018): how many objects a caption mentions that are not in the image.

    CHAIR_S = captions with >= 1 hallucinated object / captions
    CHAIR_I = hallucinated object mentions / object mentions      (mentions counted with repetition)
    recall  = sum |mentioned & gt| / sum |gt|                     (Maxlinn's addition, as in OPERA)
    avg_len = tokens per caption, after two-word merging          (OPERA's "Len")

Word rules follow the reference implementation (LisaAnne/Hallucination utils/chair.py, as modified by
Maxlinn and copied by OPERA/HALC/RITUAL/lmms-eval): lower-case, tokenize, lemmatize, merge the
two-word phrases left to right, drop "seat" when "toilet" is mentioned, keep the words of the synonym
table (`chair_synonyms.json`, beside this module) and map them to their node word.

The one deliberate difference is the lemmatizer. The references use `pattern.en.singularize` or NLTK's
POS tagger + WordNet, both needing downloads. Here it is a rule-based noun singulariser with an
irregular-plural table, written for the synonym vocabulary (`singularize`). NLTK's tagger also turns a
few verb forms into object words ("skiing" -> ski -> skis, "seated" -> seat -> chair, "tied" -> tie);
the noun singulariser does not, which is the pattern-CHAIR behaviour. The README records how close
this comes to the published numbers.
"""
from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from halluc.benchmarks.io import integer_id, load_coco, read_json, read_jsonl_located, require
from halluc.errors import HallucError

# ---------------------------------------------------------------- vocabulary (part of the metric's definition)

_TABLE = json.loads(resources.files(__package__).joinpath("chair_synonyms.json").read_text("utf-8"))
NODE_OF: Mapping[str, str] = {form: node for node, forms in _TABLE["nodes"].items() for form in forms}
NODES: tuple[str, ...] = tuple(_TABLE["nodes"])

# Two-word phrases read as one word; most map to themselves (and count only if in the table),
# "baby dog" -> dog and "passenger train" -> train stop qualifiers firing "person".
_PHRASES = ("motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
            "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball",
            "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone",
            "mobile phone", "teddy bear", "hair drier", "potted plant", "bow tie", "laptop computer",
            "stove top oven", "home plate", "train track")
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
DOUBLE_WORDS: Mapping[str, str] = {
    **{p: p for p in _PHRASES},
    **{f"{q} {a}": a for a in _ANIMALS for q in ("baby", "adult")},
    "passenger jet": "jet", "passenger train": "train",
    "bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass",
}

# ---------------------------------------------------------------- tokenizer (NLTK word_tokenize, the parts that matter)

_TOKEN_RULES = (
    (re.compile(r"(?<=\w)\.(?=[\s\"')\]]|$)"), " . "),          # a period ending a word (3.5 stays whole)
    (re.compile(r"\.\.\."), " ... "),
    (re.compile(r"([;@#$%&?!()\[\]{}\"])"), r" \1 "),
    (re.compile(r"(?<!\d),|,(?!\d)"), " , "),                     # 1,000 stays one token
    (re.compile(r"(?<!\d):|:(?!\d)"), " : "),
    (re.compile(r"(\w)('s|'re|'ve|'ll|'d|'m|n't)\b"), r"\1 \2"),  # dog's -> dog 's ; don't -> do n't
    (re.compile(r"(\w)'(?=\s|$)"), r"\1 '"),                      # dogs' -> dogs '
)


def tokenize(text: str, lower: bool = True) -> list[str]:
    """Lower-cased word tokens, punctuation split off as in NLTK's Treebank tokenizer.

    Hyphenated and slashed words stay whole ("hot-dog" is not "hot dog"), as in the reference.
    `lower=False` keeps the case (AMBER's evaluator tokenizes the response as written).
    """
    text = text.lower() if lower else text
    for pattern, repl in _TOKEN_RULES:
        text = pattern.sub(repl, text)
    return text.split()


# ---------------------------------------------------------------- singulariser

_IRREGULAR = {
    "men": "man", "women": "woman", "grandchildren": "grandchild",
    "mice": "mouse", "geese": "goose", "oxen": "ox", "teeth": "tooth", "feet": "foot", "dice": "die",
    "knives": "knife", "pocketknives": "pocketknife", "leaves": "leaf", "shelves": "shelf", "calves": "calf",
    "halves": "half", "wolves": "wolf", "loaves": "loaf", "scarves": "scarf", "wives": "wife",
    "lives": "life", "thieves": "thief", "buses": "bus", "busses": "bus", "minibuses": "minibus",
    "tomatoes": "tomato", "potatoes": "potato", "heroes": "hero", "cacti": "cactus",
}
_KEEP = {"sheep", "fish", "deer", "cattle", "bison", "scissors", "series", "species", "news"}


def singularize(word: str) -> str:
    """Singular of a lower-case noun; words of the synonym table are returned as they are.

    Rules in order: irregular table; invariant words; -ies -> -y (but ties -> tie);
    -sses/-shes/-ches/-xes -> drop "es"; -ss/-us/-is stay; otherwise drop a final "s".
    """
    if word in NODE_OF or word in _KEEP:
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("men") and len(word) > 4:          # policemen, servicemen, gentlemen
        return word[:-3] + "man"
    if not word.endswith("s") or word.endswith(("ss", "us", "is", "'s")):
        return word
    if word.endswith("ies"):
        return word[:-1] if len(word) <= 4 else word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    return word[:-1]


# ---------------------------------------------------------------- caption -> object mentions

def caption_words(caption: str) -> list[str]:
    """Tokens after singularising and merging the two-word phrases (the reference's `raw_words`)."""
    words = [singularize(t) for t in tokenize(caption)]
    merged, i = [], 0
    while i < len(words):
        pair = " ".join(words[i:i + 2])
        if pair in DOUBLE_WORDS:
            merged.append(DOUBLE_WORDS[pair])
            i += 2
        else:
            merged.append(words[i])
            i += 1
    return merged


def caption_mentions(caption: str) -> list[tuple[str, str]]:
    """(surface word, node word) for every object mention, in order, repetitions kept."""
    return _mentions(caption_words(caption))


def _mentions(words: list[str]) -> list[tuple[str, str]]:
    if "toilet" in words and "seat" in words:   # "the seat of the toilet" must not fire chair
        words = [w for w in words if w != "seat"]
    return [(w, NODE_OF[w]) for w in words if w in NODE_OF]


def trim_incomplete(caption: str) -> str:
    """Drop the last, unfinished sentence: keep text up to the last ".", "!" or "?".

    OPERA's convention for 64-token captions (shikiw/OPERA#30). A caption with no sentence end
    at all is one unfinished sentence and becomes empty.
    """
    text = caption.rstrip()
    cut = max(text.rfind("."), text.rfind("!"), text.rfind("?"))
    return text[:cut + 1]


# ---------------------------------------------------------------- scoring

@dataclass(frozen=True)
class CaptionCheck:
    image_id: int
    mentions: tuple[tuple[str, str], ...]   # (word, node) in caption order
    hallucinated: tuple[str, ...]          # node words not in the ground truth, with repetition
    recalled: frozenset[str]               # ground-truth node words mentioned
    n_tokens: int


@dataclass(frozen=True)
class ChairScores:
    """Percentages 0-100 except avg_len (tokens) and n (captions)."""

    chair_s: float
    chair_i: float
    recall: float
    avg_len: float
    n: int
    captions: tuple[CaptionCheck, ...] = ()

    def as_dict(self) -> dict[str, float | int]:
        return {"chair_s": self.chair_s, "chair_i": self.chair_i, "recall": self.recall,
                "avg_len": self.avg_len, "n": self.n}


def check_caption(image_id: int, caption: str, gt_objects: Collection[str]) -> CaptionCheck:
    """CHAIR's verdict on one caption given the image's ground-truth node words."""
    words = caption_words(caption)
    mentions = tuple(_mentions(words))
    hallucinated = tuple(node for _, node in mentions if node not in gt_objects)
    recalled = frozenset(node for _, node in mentions if node in gt_objects)
    return CaptionCheck(image_id, mentions, hallucinated, recalled, len(words))


def score_chair(captions: Iterable[tuple[int, str]] | Mapping[int, str],
                gt: Mapping[int, Collection[str]], *, trim: bool = False) -> ChairScores:
    """CHAIR over (image_id, caption) pairs against ground truth {image_id: node words}.

    An image without ground truth is an error: the reference silently treats it as empty,
    which makes every mention a hallucination. So is an image captioned twice.
    """
    pairs = list(captions.items() if isinstance(captions, Mapping) else captions)
    if not pairs:
        raise HallucError("no captions to score")
    seen: set[int] = set()
    for image_id, _ in pairs:
        if image_id in seen:
            raise HallucError(f"image_id {image_id} is captioned twice; CHAIR counts one caption per image")
        seen.add(image_id)
    missing = [i for i, _ in pairs if i not in gt]
    if missing:
        raise HallucError(f"{len(missing)} captioned images have no ground truth (first: {missing[0]})")
    checks = tuple(check_caption(i, trim_incomplete(c) if trim else c, gt[i]) for i, c in pairs)
    return aggregate_checks(checks, [len(set(gt[i])) for i, _ in pairs])


def aggregate_checks(checks: Sequence[CaptionCheck], gt_sizes: Sequence[int]) -> ChairScores:
    """CHAIR totals from per-caption checks and each image's number of ground-truth objects."""
    if not checks:
        raise HallucError("no captions to score")
    mentions = sum(len(c.mentions) for c in checks)
    wrong = sum(len(c.hallucinated) for c in checks)
    return ChairScores(
        chair_s=100.0 * sum(bool(c.hallucinated) for c in checks) / len(checks),
        chair_i=100.0 * wrong / mentions if mentions else 0.0,
        recall=100.0 * sum(len(c.recalled) for c in checks) / sum(gt_sizes) if sum(gt_sizes) else 0.0,
        avg_len=sum(c.n_tokens for c in checks) / len(checks),
        n=len(checks), captions=tuple(checks))


# ---------------------------------------------------------------- I/O: captions and ground truth

def read_chair_captions(path: str | Path) -> list[tuple[int, str]]:
    """Caption file: JSON lines with image_id and caption (`text` is accepted for `caption`).

    An image captioned twice is refused naming the id and both lines: counting both would double its
    weight in CHAIR (and `n`), keeping one would be a silent choice.
    """
    pairs: list[tuple[int, str]] = []
    seen: dict[int, str] = {}
    for where, row in read_jsonl_located(path):
        key = "caption" if "caption" in row else "text"
        require(row, ("image_id", key), where)
        image_id = integer_id(row["image_id"], where, "image_id")
        if not isinstance(row[key], str):
            raise HallucError(f"{where}: '{key}' must be a string (the caption), got {json.dumps(row[key])}")
        if image_id in seen:
            raise HallucError(f"{where}: image_id {image_id} is captioned twice (first at {seen[image_id]})")
        seen[image_id] = where
        pairs.append((image_id, row[key]))
    if not pairs:
        raise HallucError(f"{path}: no captions")
    return pairs


def load_chair_gt(source: str | Path, image_ids: Collection[int] | None = None) -> dict[int, frozenset[str]]:
    """Ground truth from a COCO annotation directory or a JSON object {image_id: [object names]}."""
    source = Path(source)
    if source.is_dir():
        return chair_gt_from_coco(source, image_ids)
    return chair_gt_from_json(source)


def chair_gt_from_json(path: str | Path) -> dict[int, frozenset[str]]:
    """{image_id: [names]}; names may be node words or any synonym, and are mapped to node words."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise HallucError(f"{path}: expected a JSON object mapping image id -> list of object names")
    gt = {}
    for key, names in data.items():
        if not re.fullmatch(r"[0-9]{1,18}", key.strip()) or not isinstance(names, list) \
                or not all(isinstance(n, str) for n in names):
            raise HallucError(f"{path}: entry {key!r} must map an integer image id (digits 0-9) to a list of names")
        unknown = [n for n in names if n not in NODE_OF]
        if unknown:
            raise HallucError(f"{path}: image {key}: '{unknown[0]}' is not a CHAIR object word")
        gt[int(key)] = frozenset(NODE_OF[n] for n in names)
    return gt


def chair_gt_from_coco(annotation_dir: str | Path,
                       image_ids: Collection[int] | None = None) -> dict[int, frozenset[str]]:
    """Reference ground truth: instance categories plus objects named in the five GT captions.

    Uses every `instances_{train,val}2014.json` present with its `captions_*` twin (the reference
    loads both splits; COCO ids are unique across them, so val alone gives the same sets for
    val images). `image_ids` limits the work to the images being scored.
    """
    annotation_dir = Path(annotation_dir)
    splits = [s for s in ("train", "val") if (annotation_dir / f"instances_{s}2014.json").exists()]
    if not splits:
        raise HallucError(f"{annotation_dir}: no instances_train2014.json or instances_val2014.json")
    wanted = None if image_ids is None else set(image_ids)
    gt: dict[int, set[str]] = {}
    for split in splits:   # check both files before parsing either (train2014 alone is ~450 MB)
        captions = annotation_dir / f"captions_{split}2014.json"
        if not captions.exists():
            raise HallucError(f"{captions}: missing; CHAIR ground truth needs the captions file too")
    for split in splits:
        _add_instances(gt, load_coco(annotation_dir / f"instances_{split}2014.json"), wanted)
        _add_caption_objects(gt, load_coco(annotation_dir / f"captions_{split}2014.json"), wanted)
    return {i: frozenset(objs) for i, objs in gt.items()}


def _add_instances(gt, coco, wanted) -> None:
    names = {c["id"]: c["name"] for c in coco.dataset.get("categories", [])}
    foreign = sorted(n for n in names.values() if n not in NODE_OF)
    if foreign:
        raise HallucError(f"category '{foreign[0]}' is not one of the 80 COCO objects CHAIR knows")
    for img in coco.dataset.get("images", []):   # an image with no objects has an empty set, not none
        if wanted is None or img["id"] in wanted:
            gt.setdefault(img["id"], set())
    for ann in coco.dataset["annotations"]:
        if wanted is None or ann["image_id"] in wanted:
            gt.setdefault(ann["image_id"], set()).add(NODE_OF[names[ann["category_id"]]])


def _add_caption_objects(gt, coco, wanted) -> None:
    for ann in coco.dataset["annotations"]:
        if "caption" not in ann:
            raise HallucError(f"annotation {ann.get('id')} has no 'caption': not a COCO captions file")
        if wanted is None or ann["image_id"] in wanted:
            gt.setdefault(ann["image_id"], set()).update(n for _, n in caption_mentions(ann["caption"]))
