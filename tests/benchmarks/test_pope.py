"""POPE: metrics worked by hand, the five parsers on tricky answers, sampling, and the real files."""
from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path

import pytest

from halluc.benchmarks.pope import scoring as pope
from halluc.benchmarks.pope.scoring import PopeQuestion, pope_metrics, score_pope
from halluc.errors import HallucError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _questions(labels):
    return [PopeQuestion(i + 1, f"img{i // 2}.jpg", f"q{i + 1}", label) for i, label in enumerate(labels)]


# ---------------------------------------------------------------- metrics

def test_known_counts():
    # TP=3 FP=1 TN=4 FN=2: acc 7/10, precision 3/4, recall 3/5, F1 2*.75*.6/1.35, yes 4/10
    preds = [True] * 3 + [True] + [False] * 4 + [False] * 2
    labels = [True] * 3 + [False] + [False] * 4 + [True] * 2
    s = pope_metrics(preds, labels)
    assert (s.tp, s.fp, s.tn, s.fn) == (3, 1, 4, 2)
    assert s.accuracy == pytest.approx(70.0)
    assert s.precision == pytest.approx(75.0)
    assert s.recall == pytest.approx(60.0)
    assert s.f1 == pytest.approx(66.6667, abs=1e-4)
    assert s.yes_ratio == pytest.approx(40.0)
    assert (s.unparsed, s.n) == (0, 10)


def test_unparsed_is_wrong_for_accuracy_and_left_out_of_precision_recall():
    # 4 questions: a right yes, a right no, two unparsed -> acc 2/4, P = R = 1/1, yes 1/4
    s = pope_metrics([True, False, None, None], [True, False, True, False])
    assert s.accuracy == pytest.approx(50.0)
    assert (s.precision, s.recall, s.f1) == pytest.approx((100.0, 100.0, 100.0))
    assert s.yes_ratio == pytest.approx(25.0)
    assert (s.unparsed, s.n) == (2, 4)


def test_empty_denominators_give_zero_not_an_exception():
    s = pope_metrics([None, None], [True, False])
    assert (s.accuracy, s.precision, s.recall, s.f1, s.yes_ratio) == (0.0, 0.0, 0.0, 0.0, 0.0)


def test_as_dict_has_exactly_the_reported_keys():
    keys = list(pope_metrics([True], [True]).as_dict())
    assert keys == ["accuracy", "precision", "recall", "f1", "yes_ratio", "unparsed", "n"]


# ---------------------------------------------------------------- parsers

@pytest.mark.parametrize("parser,text,expected", [
    # official POPE / LLaVA: first sentence only, case-sensitive tokens No/no/not
    ("pope", "Yes.", True),
    ("pope", "No, there is not.", False),
    ("pope", "There is no dog in the image.", False),
    ("pope", "NO", True),                       # case-sensitive, as in the reference
    ("pope", "Not at all", True),               # "Not" is not in the list either
    ("pope", "Yes. There is no cat.", True),    # only the first sentence counts
    ("pope", "I don't think so", True),         # n't is not a negation here
    ("pope", "", True),                         # never unparsed
    # OPERA/HALC recorder: whole answer, NO and n't count
    ("opera", "Yes. There is no cat.", False),
    ("opera", "NO", False),
    ("opera", "I don't see one", False),
    ("opera", "Nothing like that", True),
    ("opera", "yes", True),
    # VCD, label-free half: yes-only / no-only substrings, else ambiguous
    ("vcd", "Yes", True),
    ("vcd", "No", False),
    ("vcd", "I know it is there", False),       # "know" contains "no"
    ("vcd", "Yes and no", None),
    ("vcd", "maybe", None),
    # lmms-eval exact match
    ("exact", "  Yes \n", True),
    ("exact", "no", False),
    ("exact", "Yes.", None),
    ("exact", "yes, there is", None),
    # VLMEvalKit whole words
    ("word", "Yes.", True),
    ("word", "No, there isn't.", False),
    ("word", "yes/no", None),
    ("word", "Nope", None),
    ("word", "Yesterday I know", None),
    # VLMEvalKit's process_punctuation, rule for rule (checked against its code on 20,763 strings)
    ("word", "*Yes*", None), ("word", "Answer:yes", None), ("word", "yes-man", True), ("word", "(yes)", True),
    ("word", "1,2 yes-no", None), ("word", "a. " * 20 + "yes.", True),
    ("word", "a. " * 40 + "yes.", None),            # only the first 32 lone periods are removed
])
def test_parsers(parser, text, expected):
    assert pope.get_parser(parser)(text) is expected


def test_unknown_parser_lists_choices():
    with pytest.raises(HallucError, match=r"did you mean 'vcd'.*choices: exact, opera, pope, vcd, word"):
        pope.get_parser("vdc")


def test_vcd_scoring_is_asymmetric_like_vcds_script():
    # label yes + "yes and no" -> TP; label no + "yes and no" -> TN (both contain the label's word);
    # label yes + "maybe" -> FN; label no + "maybe" -> FP; nothing counts as unparsed.
    questions = _questions([True, False, True, False])
    answers = {1: "yes and no", 2: "yes and no", 3: "maybe", 4: "maybe"}
    s = score_pope(questions, answers, "vcd")
    assert (s.tp, s.tn, s.fn, s.fp, s.unparsed) == (1, 1, 1, 1, 0)
    assert s.accuracy == pytest.approx(50.0)
    assert s.yes_ratio == pytest.approx(50.0)


# ---------------------------------------------------------------- matching answers to questions

def test_answers_are_matched_by_question_id_not_position():
    questions = _questions([True, False, True, False])
    answers = {"4": "No", 3: "Yes", 2: "No", 1: "Yes"}   # reversed and one id as a string
    assert score_pope(questions, answers).accuracy == pytest.approx(100.0)


def test_missing_answers_are_refused_unless_allowed_then_unparsed_and_wrong():
    with pytest.raises(HallucError, match="2 of the 4 questions in the question set have no answer in .*first: 3"):
        score_pope(_questions([True, False, True, False]), {1: "Yes", 2: "No"})
    s = score_pope(_questions([True, False, True, False]), {1: "Yes", 2: "No"}, allow_missing=True)
    assert (s.unparsed, s.n) == (2, 4)
    assert s.accuracy == pytest.approx(50.0)


def test_answer_to_unknown_question_is_an_error():
    with pytest.raises(HallucError, match="mixed POPE versions"):
        score_pope(_questions([True, False]), {1: "Yes", 2: "No", 2911: "Yes"})


def test_custom_parser_callable():
    s = score_pope(_questions([True, False]), {1: "si", 2: "nein"}, lambda t: {"si": True}.get(t, False))
    assert s.accuracy == pytest.approx(100.0)


# ---------------------------------------------------------------- protocols

def test_protocol_presets():
    assert set(pope.PROTOCOLS) == {"llava", "vcd", "opera"}
    llava = pope.get_protocol("llava")
    assert llava.prompt("Is there a dog in the image?") == (
        "Is there a dog in the image?\nAnswer the question using a single word or phrase.")
    assert dict(llava.decoding) == {"do_sample": False, "max_new_tokens": 128}
    assert (llava.parser, llava.headline, llava.question_set) == ("pope", "f1", "coco_2910")
    vcd = pope.get_protocol("vcd")
    assert vcd.decoding["do_sample"] is True and vcd.decoding["temperature"] == 1.0 and vcd.parser == "vcd"
    assert pope.get_protocol("opera").decoding["num_beams"] == 5
    for p in pope.PROTOCOLS.values():
        pope.get_parser(p.parser)
    with pytest.raises(AttributeError):
        llava.parser = "word"  # frozen
    with pytest.raises(TypeError, match="read-only"):
        llava.decoding["do_sample"] = True  # a shared preset cannot be edited by accident
    assert pickle.loads(pickle.dumps(vcd)) == vcd and json.dumps(vcd.decoding)  # still plain data
    assert dataclasses.asdict(vcd)["decoding"]["temperature"] == 1.0
    with pytest.raises(HallucError, match="choices: llava, opera, vcd"):
        pope.get_protocol("lava")


# ---------------------------------------------------------------- reading files

def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_questions_and_answers(tmp_path):
    q = _write(tmp_path / "q.json", [
        json.dumps({"question_id": 1, "image": "a.jpg", "text": "Is there a dog in the image?", "label": "yes"}),
        "",
        json.dumps({"question_id": 2, "image": "a.jpg", "text": "Is there a cat in the image?", "label": "No"}),
    ])
    questions = pope.read_pope_questions(q)
    assert [(x.question_id, x.label) for x in questions] == [(1, True), (2, False)]
    a = _write(tmp_path / "a.jsonl", [json.dumps({"question_id": "2", "text": "No."}),
                                      json.dumps({"question_id": 1, "answer": "Yes"})])
    assert pope.read_pope_answers(a) == {2: "No.", 1: "Yes"}


@pytest.mark.parametrize("line,message", [
    ('{"question_id": 2, "image": "a.jpg", "text": "t", "label": "yes"', r"q.json:2: not valid JSON"),
    ('{"question_id": 2, "image": "a.jpg", "label": "yes"}', r"q.json:2: missing key 'text'"),
    ('{"question_id": 2, "image": "a.jpg", "text": "t", "label": "maybe"}', r"q.json:2: label must be"),
    ('{"question_id": 1, "image": "a.jpg", "text": "t", "label": "no"}', r"q.json:2: question_id 1 appears twice"),
    ('[1, 2]', r"q.json:2: expected a JSON object"),
])
def test_bad_question_lines_name_file_and_line(tmp_path, line, message):
    first = json.dumps({"question_id": 1, "image": "a.jpg", "text": "t", "label": "yes"})
    with pytest.raises(HallucError, match=message):
        pope.read_pope_questions(_write(tmp_path / "q.json", [first, line]))


def test_missing_file(tmp_path):
    with pytest.raises(HallucError, match="no such file"):
        pope.read_pope_questions(tmp_path / "nope.json")


def test_repeated_answer_is_an_error(tmp_path):
    a = _write(tmp_path / "a.jsonl", ['{"question_id": 1, "text": "Yes"}', '{"question_id": 1, "text": "No"}'])
    with pytest.raises(HallucError, match="a.jsonl:2: question_id 1 answered twice"):
        pope.read_pope_answers(a)


# ---------------------------------------------------------------- building question sets

# Images 1-4 have >= 3 objects, image 5 has one (never eligible, so "apple" is never a negative).
# Eligible pool counts: person 4, dog 3, car 2, cat 1, umbrella 1, chair 1.
_CATS = ["person", "dog", "cat", "car", "umbrella", "chair", "apple"]
_IMAGES = {1: ["person", "dog", "cat"], 2: ["person", "dog", "car"], 3: ["person", "dog", "umbrella"],
           4: ["person", "car", "chair"], 5: ["apple"]}


def _coco_file(tmp_path: Path) -> Path:
    cat_id = {name: i + 1 for i, name in enumerate(_CATS)}
    anns, next_id = [], 100
    for img, objects in _IMAGES.items():
        # annotation ids decide object order; the same object twice must count once
        for name in objects + objects[:1]:
            anns.append({"id": next_id, "image_id": img, "category_id": cat_id[name], "iscrowd": 0,
                         "bbox": [0, 0, 1, 1], "area": 1})
            next_id += 1
    anns.reverse()  # file order must not matter
    data = {"images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in _IMAGES],
            "annotations": anns, "categories": [{"id": v, "name": k} for k, v in cat_id.items()]}
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(data))
    return path


def _by_image(questions):
    out: dict[str, list[tuple[str, bool]]] = {}
    for q in questions:
        obj = re.fullmatch(r"Is there an? (.+) in the image\?", q.text).group(1)
        out.setdefault(q.image, []).append((obj, q.label))
    return out


def test_coco_objects_in_annotation_order(tmp_path):
    objects = pope.coco_objects_by_image(_coco_file(tmp_path))
    assert objects["COCO_val2014_000000000001.jpg"] == ["person", "dog", "cat"]
    assert objects["COCO_val2014_000000000005.jpg"] == ["apple"]


@pytest.mark.parametrize("strategy", pope.SPLITS)
def test_split_structure(tmp_path, strategy):
    qs = pope.build_pope_from_coco(_coco_file(tmp_path), strategy, n_images=4, seed=1)
    assert len(qs) == 24 and [q.question_id for q in qs] == list(range(1, 25))
    assert [q.label for q in qs] == [True, False] * 12
    for image, asked in _by_image(qs).items():
        img_id = int(image[-16:-4])
        assert [o for o, label in asked if label] == _IMAGES[img_id]           # first 3 objects, in order
        negatives = [o for o, label in asked if not label]
        assert len(set(negatives)) == 3 and not set(negatives) & set(_IMAGES[img_id])
        assert "apple" not in negatives                                         # pool = sampled images only


def test_popular_and_adversarial_negatives(tmp_path):
    path = _coco_file(tmp_path)
    popular = _by_image(pope.build_pope_from_coco(path, "popular", n_images=4, seed=3))
    adversarial = _by_image(pope.build_pope_from_coco(path, "adversarial", n_images=4, seed=3))
    img1, img4 = "COCO_val2014_000000000001.jpg", "COCO_val2014_000000000004.jpg"
    negs = lambda split, img: [o for o, label in split[img] if not label]  # noqa: E731
    # popular: most frequent absent objects first (car 2 for image 1, dog 3 for image 4)
    assert negs(popular, img1)[0] == "car" and set(negs(popular, img1)) == {"car", "umbrella", "chair"}
    assert negs(popular, img4)[0] == "dog" and set(negs(popular, img4)) == {"dog", "cat", "umbrella"}
    # adversarial, image 1 (person, dog, cat): person co-occurs with dog 3, car 2 -> car;
    # dog with person 3 then cat/car/umbrella 1 -> umbrella (the others are in the image or asked);
    # cat only with person and dog -> random fallback, and chair is the one object left.
    assert negs(adversarial, img1) == ["car", "umbrella", "chair"]
    # image 4 (person, car, chair): person's most co-occurring absent object is dog
    assert negs(adversarial, img4)[0] == "dog"


def test_article_before_vowel(tmp_path):
    qs = pope.build_pope_from_coco(_coco_file(tmp_path), "random", n_images=4, seed=0)
    texts = {q.text for q in qs}
    assert "Is there an umbrella in the image?" in texts
    assert not any("imange" in t or "a umbrella" in t for t in texts)


def test_sampling_is_deterministic_and_shares_images_across_splits():
    names = [f"obj{k}" for k in range(10)]
    objects = {f"img{i}.jpg": [names[i % 10], names[(i + 3) % 10], names[(i + 6) % 10]] for i in range(12)}
    runs = {s: pope.build_pope(objects, s, n_images=6, seed=7) for s in pope.SPLITS}
    assert runs["random"] == pope.build_pope(objects, "random", n_images=6, seed=7)
    images = {s: [q.image for q in qs] for s, qs in runs.items()}
    assert images["random"] == images["popular"] == images["adversarial"]
    picks = {tuple(dict.fromkeys(q.image for q in pope.build_pope(objects, "random", n_images=6, seed=s)))
             for s in range(10)}
    assert len(picks) > 1                                   # the seed does change the sample


def test_too_few_images(tmp_path):
    with pytest.raises(HallucError, match="only 4 images have at least 3 objects"):
        pope.build_pope_from_coco(_coco_file(tmp_path), "random", n_images=5)
    with pytest.raises(HallucError, match="POPE strategy"):
        pope.build_pope({}, "popularity")


# ---------------------------------------------------------------- real files

@pytest.mark.parametrize("version,split,rows,no", [
    ("coco", "random", 3000, 1500), ("coco", "popular", 3000, 1500), ("coco", "adversarial", 3000, 1500),
    ("coco_2910", "random", 2910, 1410), ("coco_2910", "popular", 3000, 1500),
    ("coco_2910", "adversarial", 3000, 1500),
])
def test_real_question_files(version, split, rows, no):
    path = DATA / "pope" / version / f"coco_pope_{split}.json"
    if not path.exists():
        pytest.skip("shared POPE data not available")
    qs = pope.read_pope_questions(path, category=split)
    assert len(qs) == rows and sum(not q.label for q in qs) == no
    assert len({q.image for q in qs}) == 500
    assert qs[0] == PopeQuestion(1, "COCO_val2014_000000310196.jpg", "Is there a snowboard in the image?",
                                 True, split)


def test_real_files_mixed_versions_are_caught():
    new, old = (DATA / "pope" / v / "coco_pope_random.json" for v in ("coco", "coco_2910"))
    if not new.exists() or not old.exists():
        pytest.skip("shared POPE data not available")
    answers = {q.question_id: "Yes" for q in pope.read_pope_questions(new)}
    with pytest.raises(HallucError, match="90 answers"):
        score_pope(pope.read_pope_questions(old), answers)


def test_real_files_short_answers_on_the_long_file_are_refused():
    """Answers for the 2,910-question file scored on the 3,000 file: ids 1..2,910 exist in both, so no
    answer is 'unknown'; 90 questions are unanswered and the rest are paired with other questions."""
    new, old = (DATA / "pope" / v / "coco_pope_random.json" for v in ("coco", "coco_2910"))
    if not new.exists() or not old.exists():
        pytest.skip("shared POPE data not available")
    answers = {q.question_id: "Yes" if q.label else "No" for q in pope.read_pope_questions(old)}
    with pytest.raises(HallucError, match="90 of the 3000 questions in .* have no answer .*mixed POPE versions"):
        score_pope(pope.read_pope_questions(new), answers)


@pytest.mark.parametrize("text", [None, 1, True, ["Yes"]])
def test_answer_text_must_be_a_string(tmp_path, text):
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"question_id": 1, "text": "No"}) + "\n" + json.dumps({"question_id": 2, "text": text}))
    with pytest.raises(HallucError, match=f"a.jsonl:2: 'text' must be a string .*got {re.escape(json.dumps(text))}"):
        pope.read_pope_answers(a)


def test_empty_answer_file_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n")
    with pytest.raises(HallucError, match="a.jsonl: no answers"):
        pope.read_pope_answers(tmp_path / "a.jsonl")
