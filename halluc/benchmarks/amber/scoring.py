"""AMBER (Wang et al., 2023): an LLM-free hallucination benchmark with a generative and a yes/no part.

Data (junyangwang0410/AMBER `data/`): 1,004 images; ids 1-1004 ask "Describe this image." and carry
the objects that are there (`truth`) and hallucination-prone ones that are not (`hallu`); ids
1005-15220 are 14,216 yes/no questions on existence, attributes (state, number, action) and relations.
`relation.json` associates each object word with words that also mean it ("forest": tree, bush) and
`safe_words.txt` lists nouns never counted.

Rules of the official evaluator (`inference.py`), kept exactly, quirks included:
  * generative: nouns of the response (NLTK tokenizer + tagger, NN* tags, WordNet lemma), kept if
    they are association words; a safe word is skipped; a noun equal to a truth word or to one of its
    associations covers the first truth entry it matches; a noun equal (or spaCy-similar > 0.8, see
    the extractors) to a hallu word or its associations covers that hallu entry; a noun neither equal
    nor similar to any truth word or association is a hallucination. Per response: CHAIR counts
    hallucinated nouns over nouns, Cover truth entries covered, Cog hallu entries covered, Hal
    responses with any hallucination.
  * yes/no: a response counts only if it is exactly "Yes" or "No"; "No" is the positive class
    (precision = right "No" / answered "No", recall = right "No" / truth "no").
  * arithmetic: every counter's denominator starts at 0.001 (`metrics.txt`), each metric is rounded
    to 0.1, F1 is computed from the rounded precision and recall with +0.0001 in its denominator
    (+0.001 for existence); attribute sums three counters, so its denominators start at 0.003.
  * AMBER Score = (100 - CHAIR + F1) / 2 (the paper's formula in percent).

Extractors. The official nouns come from NLTK's tagger and WordNet lemmatiser, and its similarity from
spaCy's `en_core_web_lg` vectors: data downloads. `official` uses them when installed (extra
`amber-official`, then `python -m nltk.downloader punkt punkt_tab averaged_perceptron_tagger
averaged_perceptron_tagger_eng wordnet` and `python -m spacy download en_core_web_lg`); `offline`
needs nothing: every token whose singular (CHAIR's rule-based singulariser) is an association word is
a noun, case kept (the official lemmatiser leaves "Dog" alone, so it never counts either), and
"similar" means equal. Every result records which one ran.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from halluc.benchmarks.chair.scoring import singularize, tokenize
from halluc.benchmarks.io import integer_id, read_json, read_jsonl_located, read_text, require, text_field
from halluc.benchmarks.pope.scoring import answer_text
from halluc.errors import HallucError, unknown_choice

GENERATIVE_IDS = range(1, 1005)
DIMENSIONS = ("existence", "attribute", "relation")
# annotation type -> (dimension, attribute kind)
_TYPES = {"discriminative-hallucination": ("existence", ""), "discriminative-attribute-state": ("attribute", "state"),
          "discriminative-attribute-number": ("attribute", "number"),
          "discriminative-attribute-action": ("attribute", "action"),
          "discriminative-relation": ("relation", ""), "relation": ("relation", "")}
_START = 0.001  # every counter's denominator in the official metrics.txt
SIMILARITY = 0.8


@dataclass(frozen=True)
class AmberData:
    annotations: Mapping[int, Mapping]          # id -> {"type", "truth", ("hallu")}
    association: Mapping[str, tuple[str, ...]]  # word -> words that also mean it
    safe_words: tuple[str, ...]
    queries: Mapping[int, tuple[str, str]]      # id -> (image file, query); empty when not read

    @functools.cached_property
    def vocabulary(self) -> frozenset[str]:
        return frozenset(self.association) | {w for words in self.association.values() for w in words}


def load_amber(folder: str | Path, queries: bool = True) -> AmberData:
    """The official `data/` folder: annotations.json, relation.json, safe_words.txt, query/query_all.json.
    Every item is checked as it is read (types, keys, ids): a malformed folder is one line naming the file."""
    folder = Path(folder)
    path = folder / "annotations.json"
    annotations = read_json(path)
    if not isinstance(annotations, list):
        raise HallucError(f"{path}: expected a JSON array of items")
    items = {}
    for i, item in enumerate(annotations):
        where = f"{path}: item {i + 1}"
        checked = _annotation(item, where)
        if checked["id"] in items:
            raise HallucError(f"{where}: id {checked['id']} appears twice")
        items[checked["id"]] = checked
    association = _association(read_json(folder / "relation.json"), folder / "relation.json")
    safe = tuple(line for line in read_text(folder / "safe_words.txt").split("\n") if line)
    asked = {}
    if queries:
        for where, row in read_jsonl_located(folder / "query" / "query_all.json"):
            require(row, ("id", "image", "query"), where)
            asked[integer_id(row["id"], where)] = (text_field(row, "image", where), text_field(row, "query", where))
    return AmberData(items, association, safe, asked)


def _annotation(item, where: str) -> dict:
    """One annotations.json item: {"id", "type", "truth", ("hallu")}, typed as the official evaluator reads it."""
    if not isinstance(item, dict):
        raise HallucError(f"{where}: expected an object, got {type(item).__name__}")
    require(item, ("id", "type", "truth"), where)
    kind = item["type"]
    if not isinstance(kind, str) or (kind != "generative" and kind not in _TYPES):
        raise HallucError(f"{where}: 'type' must be generative or one of {', '.join(_TYPES)}, got {json.dumps(kind)}")
    checked = {**item, "id": integer_id(item["id"], where)}
    if kind == "generative":
        require(item, ("hallu",), where)
        for key in ("truth", "hallu"):
            if not isinstance(item[key], list) or not all(isinstance(w, str) for w in item[key]):
                raise HallucError(f"{where}: '{key}' must be a list of words, got {json.dumps(item[key])}")
    elif item["truth"] not in ("yes", "no"):
        raise HallucError(f"{where}: 'truth' must be \"yes\" or \"no\", got {json.dumps(item['truth'])}")
    return checked


def _association(data, path: Path) -> dict[str, tuple[str, ...]]:
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(w, str) for w in v)
                                             for v in data.values()):
        raise HallucError(f"{path}: expected a JSON object mapping each word to a list of words")
    return {k: tuple(v) for k, v in data.items()}


def read_responses(path: str | Path) -> dict[int, str]:
    """An official inference file: [{"id": 1, "response": "..."}, ...] (JSON array or lines)."""
    responses: dict[int, str] = {}
    for where, row in read_jsonl_located(path):
        require(row, ("id", "response"), where)
        item = integer_id(row["id"], where)
        if item in responses:
            raise HallucError(f"{where}: id {item} answered twice")
        responses[item] = answer_text(row["response"], "response", where)
    if not responses:
        raise HallucError(f"{path}: no responses")
    return responses


# ---------------------------------------------------------------- extractors

@dataclass(frozen=True)
class Extractor:
    name: str                                  # "official" or "offline"
    nouns: Callable[[str], list[str]]          # response -> noun lemmas, in order, repeated
    similar: Callable[[str, str], bool]        # spaCy similarity > 0.8, or equality


def offline_extractor(vocabulary: Iterable[str]) -> Extractor:
    vocabulary = frozenset(vocabulary)

    def lemma(token: str) -> str:
        if token in vocabulary or not token.islower():
            return token
        singular = singularize(token)
        if singular == token and token.endswith("s") and token[:-1] in vocabulary:  # CHAIR keeps "skis"
            return token[:-1]
        return singular

    def nouns(text: str) -> list[str]:
        return [lemma(t) for t in tokenize(text, lower=False) if any(c.isalpha() for c in t)]

    return Extractor("offline", nouns, lambda a, b: a == b)


def official_available() -> bool:
    """NLTK (tokenizer, tagger, WordNet data) and spaCy with en_core_web_lg are all importable."""
    try:
        _official_parts()
    except (ImportError, LookupError, OSError):
        return False
    return True


@functools.lru_cache(maxsize=1)
def _official_parts():
    import nltk
    import spacy
    from nltk.stem import WordNetLemmatizer

    lemmatizer = WordNetLemmatizer()
    nltk.pos_tag(nltk.word_tokenize("A dog on grass."))
    lemmatizer.lemmatize("dogs")
    return nltk, lemmatizer, spacy.load("en_core_web_lg")


def official_extractor() -> Extractor:
    nltk, lemmatizer, nlp = _official_parts()

    def nouns(text: str) -> list[str]:
        return [lemmatizer.lemmatize(w) for w, tag in nltk.pos_tag(nltk.word_tokenize(text)) if tag.startswith("NN")]

    @functools.lru_cache(maxsize=None)
    def similar(a: str, b: str) -> bool:
        return nlp(a).similarity(nlp(b)) > SIMILARITY

    return Extractor("official", nouns, similar)


def get_extractor(kind: str, data: AmberData) -> Extractor:
    """`auto` (official when installed, else offline), `official` or `offline`."""
    if kind not in ("auto", "official", "offline"):
        raise unknown_choice("AMBER extractor", kind, ("auto", "official", "offline"))
    if kind == "official" and not official_available():
        raise HallucError("the official AMBER extractor needs nltk with its data (punkt, the perceptron tagger, "
                          "wordnet) and spaCy with en_core_web_lg: pip install 'halluc[amber-official]', then "
                          "download them; or use --extractor offline")
    if kind == "official" or (kind == "auto" and official_available()):
        return official_extractor()
    return offline_extractor(data.vocabulary)


# ---------------------------------------------------------------- generative part

@dataclass(frozen=True)
class Description:
    """One response's counters, as the official evaluator adds them up."""

    hallucinated: int   # chair_score
    nouns: int          # chair_num
    covered: int        # safe_cover_score
    truth: int          # safe_cover_num
    cognitive: int      # hallu_cover_score
    prone: int          # hallu_cover_num
    clean: bool         # non_hallu_score


def check_description(response: str, item: Mapping, data: AmberData, extractor: Extractor) -> Description:
    vocabulary = data.vocabulary
    nouns = [n for n in extractor.nouns(response) if n in vocabulary]
    safe_words, safe_owner = _expanded(item["truth"], data.association)
    hallu_words, hallu_owner = _expanded(item["hallu"], data.association)
    safe_hit = [0] * len(safe_words)
    hallu_hit = [0] * len(hallu_words)
    hallucinated = 0
    for noun in nouns:
        if noun in data.safe_words:
            continue
        if noun in safe_words:
            safe_hit[safe_owner[safe_words.index(noun)]] = 1
            continue
        if noun in hallu_words:
            hallu_hit[hallu_owner[hallu_words.index(noun)]] = 1
        match = next((j for j, word in enumerate(hallu_words) if extractor.similar(noun, word)), None)
        if match is not None:
            hallu_hit[hallu_owner[match]] = 1
        match = next((j for j, word in enumerate(safe_words) if extractor.similar(noun, word)), None)
        if match is not None:
            safe_hit[safe_owner[match]] = 1
            continue
        hallucinated += 1
    n_truth, n_hallu = len(item["truth"]), len(item["hallu"])
    # the official sums list[-len:], which for an empty list would be the whole list: kept as it is
    return Description(hallucinated, len(nouns), sum(safe_hit[-n_truth:]), len(safe_hit[-n_truth:]),
                       sum(hallu_hit[-n_hallu:]), len(hallu_hit[-n_hallu:]), hallucinated == 0)


def _expanded(words: Sequence[str], association: Mapping[str, Sequence[str]]) -> tuple[list[str], list[int]]:
    """Associations of each word in order, then the words themselves; and for each position the index
    (into that list) of the slot it marks: an association marks its word's slot at the end, a word its
    own slot. A noun marks the first position it equals, as the official loop does."""
    expanded: list[str] = []
    owner: list[int] = []
    for i, word in enumerate(words):
        if word not in association:
            raise HallucError(f"AMBER word '{word}' is not in relation.json")
        expanded += association[word]
        owner += [i] * len(association[word])
    start = len(expanded)
    expanded += list(words)
    owner = [start + i for i in owner] + [start + i for i in range(len(words))]
    return expanded, owner


def generative_metrics(units: Sequence[Description]) -> dict[str, float]:
    total = Description(*(sum(getattr(u, f) for u in units) for f in
                          ("hallucinated", "nouns", "covered", "truth", "cognitive", "prone", "clean")))
    return {"chair": _official(total.hallucinated, total.nouns), "cover": _official(total.covered, total.truth),
            "hal": round(100 - total.clean / (_START + len(units)) * 100, 1),
            "cog": _official(total.cognitive, total.prone), "n": len(units)}


def _official(score: float, count: float, start: float = _START) -> float:
    return round(score / (start + count) * 100, 1)


# ---------------------------------------------------------------- yes/no part

@dataclass(frozen=True)
class Answer:
    dimension: str      # existence, attribute, relation
    kind: str           # state, number, action for attributes
    truth_no: bool
    said: str | None    # "Yes", "No", or None for anything else


def check_answer(response: str | None, item: Mapping, parser: Callable[[str], bool | None] | None = None) -> Answer:
    """`parser` None: the official rule (exactly "Yes" or "No"); else a yes/no parser whose verdict
    is written as "Yes"/"No" first (a `halluc run` protocol's choice)."""
    if item["type"] not in _TYPES:
        raise HallucError(f"AMBER item {item['id']} has type {item['type']!r}, not a yes/no question")
    dimension, kind = _TYPES[item["type"]]
    if response is None:
        said = None
    elif parser is None:
        said = response if response in ("Yes", "No") else None
    else:
        verdict = parser(response)
        said = None if verdict is None else ("Yes" if verdict else "No")
    return Answer(dimension, kind, item["truth"] == "no", said)


def _counts(answers: Iterable[Answer]) -> tuple[int, int, int, int, int, int]:
    n = correct = no = right_no = said_no = said_no_right = 0
    for a in answers:
        n += 1
        correct += (a.said == "No") if a.truth_no else (a.said == "Yes")
        no += a.truth_no
        right_no += a.truth_no and a.said == "No"
        said_no += a.said == "No"
        said_no_right += a.said == "No" and a.truth_no
    return n, correct, no, right_no, said_no, said_no_right


def _prf(answers: Sequence[Answer], start: float, f1_eps: float) -> dict[str, float]:
    n, correct, no, right_no, said_no, said_no_right = _counts(answers)
    accuracy, precision = _official(correct, n, start), _official(said_no_right, said_no, start)
    recall = _official(right_no, no, start)
    f1 = round(2 * (precision / 100) * (recall / 100) / ((precision / 100) + (recall / 100) + f1_eps) * 100, 1)
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}


def discriminative_metrics(units: Sequence[Answer]) -> dict[str, float]:
    """Overall and per dimension (and attribute kind), with the official epsilons."""
    out = {**_prf(units, _START, 0.0001), "n": len(units), "unparsed": sum(a.said is None for a in units)}
    for dimension in DIMENSIONS:
        mine = [a for a in units if a.dimension == dimension]
        start, eps = (3 * _START, 0.0001) if dimension == "attribute" else (_START, 0.001 if dimension == "existence"
                                                                             else 0.0001)
        out.update({f"{dimension}_{k}": v for k, v in _prf(mine, start, eps).items()})
    for kind in ("state", "number", "action"):
        out.update({f"{kind}_{k}": v for k, v in _prf([a for a in units if a.kind == kind], _START, 0.0001).items()})
    return out


def amber_score(chair: float, f1: float) -> float:
    return (100 - chair + f1) / 2


# ---------------------------------------------------------------- scoring a response file

def score(responses: Mapping[int, str], data: AmberData, extractor: Extractor,
          parser: Callable[[str], bool | None] | None = None) -> dict:
    """Score an inference file: the generative part for ids 1-1004 present, the yes/no part for the
    others present (the official evaluator also scores any subset, e.g. one dimension's query file)."""
    unknown = [i for i in responses if i not in data.annotations]
    if unknown:
        raise HallucError(f"{len(unknown)} responses have ids that are not AMBER items (first: {unknown[0]})")
    out: dict = {"extractor": extractor.name}
    generative = [i for i in responses if data.annotations[i]["type"] == "generative"]
    if generative:
        units = [check_description(responses[i], data.annotations[i], data, extractor) for i in generative]
        out["generative"] = generative_metrics(units)
    asked = [i for i in responses if data.annotations[i]["type"] != "generative"]
    if asked:
        out["discriminative"] = discriminative_metrics([check_answer(responses[i], data.annotations[i], parser)
                                                        for i in asked])
    if generative and asked:
        out["amber_score"] = amber_score(out["generative"]["chair"], out["discriminative"]["f1"])
    return out
