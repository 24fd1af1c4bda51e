"""HALC: the fields of view, the pair contrast (KL(M‖p) form, the two most divergent pairs, z_j − w·z_i), the
distinct-best beams, the seeded word test, the attention box; the search on toy-llava (no checked word = DoLa
greedy, a checked word re-decoded from the views, reproducible), its refusals and stacking."""
import math
import random
import warnings

import pytest
import torch
from PIL import Image

import halluc
from halluc.engine import focal, grounding, matchers
from halluc.engine.decoding import Decoding
from halluc.engine.halc_search import HalcSearch, HalcSettings
from halluc.errors import HallucError
from halluc.generation.generate import generate
from halluc.interventions.halc import HALC
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS

CAPTION = "Please describe this image in detail."


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 5))


def test_fields_of_view_of_a_box():
    views, target = focal.fields_of_view((0.4, 0.4, 0.6, 0.6), 0.6)
    want = [(0.46, 0.46, 0.54, 0.54), (0.4, 0.4, 0.6, 0.6), (0.34, 0.34, 0.66, 0.66), (0.244, 0.244, 0.756, 0.756)]
    for got, expected in zip(views, want, strict=True):
        assert got == pytest.approx(expected)
    assert target == 1
    clipped, _ = focal.fields_of_view((0.0, 0.0, 0.9, 0.9), 0.6)
    assert clipped[3] == pytest.approx((0.0, 0.0, 1.0, 1.0))
    shrunk = focal.fields_of_view((0.1, 0.1, 0.9, 0.9), 1.5)[0][0]
    assert shrunk == pytest.approx(focal.grow((0.1, 0.1, 0.9, 0.9), -0.8))  # the shrink is capped at 0.8


def literal_jsd(a: torch.Tensor, b: torch.Tensor) -> float:
    p, q = a.softmax(-1), b.softmax(-1)
    m = (p + q) / 2
    return float(0.5 * ((m * (m / p).log()).sum() + (m * (m / q).log()).sum()))


def test_pair_contrast_takes_the_two_most_divergent_pairs():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 9, generator=gen) * torch.tensor([[0.5], [1.0], [2.0], [3.0]])
    div = focal.pair_divergence(logits)
    pairs = {(i, j): literal_jsd(logits[i], logits[j]) for i in range(4) for j in range(i + 1, 4)}
    for (i, j), value in pairs.items():
        assert float(div[i, j]) == pytest.approx(value, rel=1e-5) and float(div[j, i]) == 0.0
    top = sorted(pairs, key=pairs.get, reverse=True)[:2]
    want = [x for i, j in top for x in (logits[j] - 0.05 * logits[i], logits[i] - 0.05 * logits[j])]
    torch.testing.assert_close(focal.pair_contrast(logits, 4, 0.05), torch.stack(want))
    with pytest.raises(ValueError):
        focal.pair_contrast(logits, 3, 0.05)


def test_distinct_best_keeps_distinct_texts_and_pads_with_the_best():
    assert focal.distinct_best(["a", "a", "b", "c"], torch.tensor([0.9, 0.8, 0.5, 0.1]), 3) == [0, 2, 3]
    assert focal.distinct_best(["a", "a", "a"], torch.tensor([0.1, 0.9, 0.2]), 3) == [1, 1, 1]


def test_word_test_is_seeded_and_follows_the_code_lists():
    nouns = frozenset(focal.NOUNS)
    words = ["dog", "person", "table", "cat", "running", "dog", "sink", "image"] * 5
    draws = lambda seed, rate: [focal.checked(w, nouns, rate, random.Random(seed)) for w in words]  # noqa: E731
    rng_a, rng_b = random.Random(7), random.Random(7)
    assert [focal.checked(w, nouns, 0.3, rng_a) for w in words] == [focal.checked(w, nouns, 0.3, rng_b) for w in words]
    every = draws(0, 0.0)
    assert every[:8] == [True, True, True, False, False, True, True, False]  # cat and image exempt, running no noun
    assert all(focal.checked("sink", nouns, 1.0, random.Random(0)) for _ in range(3))  # an added word always
    assert not any(focal.checked("dog", nouns, 1.0, random.Random(s)) for s in range(5))
    rng = random.Random(3)
    focal.checked("running", nouns, 0.3, rng)  # a draw is made for every word, checked or not
    assert rng.random() == (lambda r: (r.random(), r.random())[1])(random.Random(3))
    assert focal.entity(" dogs.") == "dog" and focal.entity("table,") == "table"


def test_attention_box_is_the_largest_hot_component():
    grid = torch.zeros(4, 4)
    grid[0, 0] = 5.0  # a small hot spot
    grid[2:4, 1:3] = 5.0  # the largest component
    box = focal.attention_box(grid, (0, 0, 40, 40), (40, 40))
    assert box == pytest.approx((0.25, 0.5, 0.75, 1.0))
    assert focal.attention_box(torch.ones(3, 3), (0, 0, 30, 30), (30, 30)) is None  # nothing stands out


def test_without_checked_words_halc_is_dola_greedy(toy, scene):
    dola = halluc.generate(toy, [scene], [CAPTION], "dola", max_new_tokens=12, return_scores=True).tokens
    halc = halluc.generate(toy, [scene], [CAPTION], "halc", skip_rate=1.0, detector="lvlm-attention",
                           matcher="lvlm-attention", max_new_tokens=12, return_scores=False)
    assert halc[0] == toy.processor.tokenizer.decode(dola[0], skip_special_tokens=True).strip()


class Recorder:
    def __init__(self):
        self.words, self.views, self.texts = [], [], []


def recorded_search(toy, scene, monkeypatch, **params):
    """Run halc on toy-llava and record what its search asks the detector, the views and the matcher."""
    seen = Recorder()
    real = HALC.search

    def search(self, session):
        inner = real(self, session)
        detect, views, score = inner.detect, inner.view_logits, inner.score
        inner.detect = lambda w: (seen.words.append(w), detect(w))[1]
        inner.view_logits = lambda crops, prefix: (seen.views.append((len(crops), list(prefix))),
                                                   views(crops, prefix))[1]
        inner.score = lambda texts: (seen.texts.append(list(texts)), score(texts))[1]
        return inner

    with monkeypatch.context() as patched:  # undone after the call: the next one wraps the real search
        patched.setattr(HALC, "search", search)
        out = halluc.generate(toy, [scene], [CAPTION], "halc", detector="lvlm-attention", matcher="lvlm-attention",
                              max_new_tokens=16, **params)
    return out[0], seen


def test_checked_words_are_redecoded_from_four_views_and_runs_repeat(toy, scene, monkeypatch):
    text, seen = recorded_search(toy, scene, monkeypatch, skip_rate=0.0)
    assert seen.words and all(w in focal.NOUNS or w in focal.ADDED for w in seen.words)
    assert all(n == 4 for n, _ in seen.views)
    assert all(len(texts) == 3 * 4 for texts in seen.texts)  # B·k candidates
    first, second = (recorded_search(toy, scene, monkeypatch, skip_rate=0.5, skip_seed=4) for _ in range(2))
    assert first[0] == second[0] and first[1].words == second[1].words  # the skipping draws are seeded


def test_the_search_asks_hf_for_one_row_and_refuses_other_beam_counts_and_sampling():
    settings = HalcSettings(beams=3, candidates=2, skip_rate=0.0)
    search = HalcSearch(settings, None, Image.new("RGB", (8, 8)), frozenset(), lambda c, p: None, lambda w: ([], False),
                        lambda texts: torch.zeros(len(texts)))
    assert search.decoding(halluc.engine.decoding.Decoding(num_beams=3)).num_beams == 1
    with pytest.raises(HallucError, match="own beams=3"):
        search.decoding(halluc.engine.decoding.Decoding(num_beams=2))
    with pytest.raises(HallucError, match="do_sample"):
        search.decoding(halluc.engine.decoding.Decoding(do_sample=True))


def test_refusals_and_validation(tiny_llava, images, monkeypatch):
    with pytest.raises(HallucError, match="'candidates' must be even"):
        HALC(candidates=3)
    with pytest.raises(HallucError, match="'candidates' must be at most 2 with windows=2"):
        HALC(windows=2, candidates=4)  # one pair of views: a second pair would contrast a view with itself
    assert HALC(windows=3, candidates=6).candidates == 6
    with pytest.raises(HallucError, match="halc: parameter 'detector'"):
        HALC(detector="owl")
    with pytest.raises(HallucError, match="supports greedy, beam decoding, not sample"):
        halluc.generate(tiny_llava, images, PROMPTS, "halc", do_sample=True, max_new_tokens=2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HallucError, match="HALC's detector .* is not available offline"):
        halluc.generate(tiny_llava, images[:1], PROMPTS[:1], "halc", detector="dino", matcher="lvlm-attention",
                        detector_model="/nonexistent/dino", max_new_tokens=2)
    with pytest.raises(HallucError, match="HALC's matcher .* is not available offline"):
        halluc.generate(tiny_llava, images[:1], PROMPTS[:1], "halc", detector="lvlm-attention", matcher="blip",
                        matcher_model="/nonexistent/blip", max_new_tokens=2)
    assert HALC(detector="dino", matcher="blip").requires() == frozenset()
    assert HALC(detector="dino", matcher="lvlm-likelihood").requires() == frozenset()
    assert HALC(detector="dino", matcher="lvlm-attention").requires() == {"grid"} == HALC().requires()
    assert math.isclose(HALC().contrast_weight, 0.05) and HALC().beams == 3 and HALC().skip_rate == 0.3


def literal_mean_log_likelihood(toy, image, prompt: str, text: str) -> float:
    """One text alone: the prompt's tokens, then the answer's, read one position at a time."""
    prompt_ids = toy.adapter.build_inputs(toy.processor, [image], [prompt])["input_ids"][0].tolist()
    inputs = toy.adapter.build_inputs(toy.processor, [image], [prompt], answers=[text])
    ids = inputs["input_ids"][0].tolist()
    assert ids[:len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = toy.model(**inputs, use_cache=False).logits[0].float()
    steps = [logits[p - 1].log_softmax(-1)[ids[p]] for p in range(len(prompt_ids), len(ids))]
    return float(sum(steps) / len(steps))


def test_the_likelihood_matcher_is_each_texts_mean_log_probability(toy, scene):
    texts = ["A park with a person", "A park with a dog and a bench", "A kitchen"]
    got = grounding.likelihood_scores(toy, scene, CAPTION, texts)
    want = [literal_mean_log_likelihood(toy, scene, CAPTION, t) for t in texts]
    assert got.tolist() == pytest.approx(want, abs=1e-4)


def test_auto_falls_back_to_the_lvlm_likelihood_matcher(toy, scene, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning, match="falls back to matcher='lvlm-likelihood'"):
        auto = halluc.generate(toy, [scene], [CAPTION], "halc", matcher_model="/nonexistent/blip", skip_rate=0.0,
                               detector="lvlm-attention", max_new_tokens=10)
    assert auto == halluc.generate(toy, [scene], [CAPTION], "halc", matcher="lvlm-likelihood", skip_rate=0.0,
                                   detector="lvlm-attention", max_new_tokens=10)


def test_stacks_with_an_in_model_method_and_refuses_branches(tiny_llava, images):
    params = dict(HALC.example_params)
    texts = halluc.generate(tiny_llava, images, PROMPTS, ["halc", "vaf"], max_new_tokens=3, **params)
    assert len(texts) == 2
    with pytest.raises(HallucError, match="halc replaces the search; it cannot be stacked"):
        halluc.generate(tiny_llava, images, PROMPTS, ["halc", "vcd"], max_new_tokens=3, **params)
    with pytest.raises(HallucError, match="each replace the search"):
        halluc.generate(tiny_llava, images, PROMPTS, ["halc", "opera"], max_new_tokens=3)


def test_custom_generate_refuses_it_in_one_line():
    with pytest.raises(HallucError, match="'halc' replaces transformers' whole search"):
        halluc.hf.custom_generate("halc")


def patched_run(toy, scene, monkeypatch, detected: bool, dola_tokens: list[int]):
    """halc where every view votes for the word's own first token (so every checked word stays) and the
    detector finds the object (`detected`) or not; returns the answer's tokens and the checked prefixes."""
    prefixes = []
    real = HALC.search

    def search(self, session):
        inner = real(self, session)
        vocab = session.model.get_output_embeddings().weight.shape[0]

        def views(crops, prefix):
            prefixes.append(len(prefix))
            logits = torch.zeros(len(crops), vocab)
            logits[:, dola_tokens[len(prefix)]] = 10.0  # the word's first token as DoLa decoded it
            return logits

        inner.view_logits = views
        inner.detect = lambda word: ([(0.1, 0.1, 0.5, 0.5)], True) if detected else ([], False)
        return inner

    with monkeypatch.context() as patched:
        patched.setattr(HALC, "search", search)
        out = generate(toy, [scene], [CAPTION], "halc", decoding=Decoding(max_new_tokens=16),
                       params={"skip_rate": 0.0, "detector": "lvlm-attention", "matcher": "lvlm-attention"})
    return out.tokens[0], prefixes


def test_a_kept_word_continues_as_dola_and_an_undetected_one_is_deleted_after_8_tokens(toy, scene, monkeypatch):
    dola = halluc.generate(toy, [scene], [CAPTION], "dola", max_new_tokens=16, return_scores=True).tokens[0]
    kept, prefixes = patched_run(toy, scene, monkeypatch, True, dola)
    assert prefixes and kept == dola  # the views agree with DoLa: nothing changes
    deleted, prefixes = patched_run(toy, scene, monkeypatch, False, dola)
    it = iter(dola)
    assert all(token in it for token in deleted)  # a subsequence of DoLa's answer: words removed, none added
    # toy-llava's vocabulary is word-level (one token a word): a checked word starting at 7 or later ends with
    # >= 8 tokens generated, and is deleted; an earlier one stays
    late = {p for p in prefixes if p >= 7}
    assert late and min(prefixes) < 7  # both cases occur on this scene ("person", then "dog")
    assert deleted == [t for i, t in enumerate(dola) if i not in late]


# ---- the official detector and matcher, as random tiny checkpoints saved like real ones -------------------------
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "person", "dog", "car", "bench", "park", "with",
         "and", "photo", "of", "street", "the"]


def _vocabulary(folder) -> str:
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    return str(folder / "vocab.txt")


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory) -> str:
    """A random Grounding DINO (Swin backbone, 64 px, 10 queries) in a local folder."""
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SwinConfig,
    )
    from transformers.models.grounding_dino import GroundingDinoImageProcessorPil

    folder = tmp_path_factory.mktemp("dino")
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                      window_size=2, out_features=["stage2", "stage3", "stage4"])
    config = GroundingDinoConfig(
        backbone_config=swin, use_timm_backbone=False, use_pretrained_backbone=False, d_model=32, num_queries=10,
        text_config=dict(model_type="bert", vocab_size=len(WORDS), hidden_size=32, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64),
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, num_feature_levels=3, encoder_n_points=1, decoder_n_points=1, max_text_len=16)
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    GroundingDinoProcessor(GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64}),
                           BertTokenizerFast(vocab_file=_vocabulary(folder))).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_blip_scorer(tmp_path_factory) -> str:
    """A random BLIP (`BlipModel`, 32 px) in a local folder."""
    from transformers import BertTokenizer, BlipConfig, BlipModel, BlipProcessor
    from transformers.models.blip import BlipImageProcessorPil

    folder = tmp_path_factory.mktemp("blip")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    config = BlipConfig(text_config=dict(vocab_size=len(WORDS), **small),
                        vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)
    torch.manual_seed(0)
    BlipModel(config).save_pretrained(folder)
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}),
                  BertTokenizer(vocab_file=_vocabulary(folder))).save_pretrained(folder)
    return str(folder)


def test_grounding_dino_boxes_are_normalised_above_the_floor_and_one_per_instance(tiny_dino, scene):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    boxes = grounding.dino_boxes(scene, "Person", tiny_dino, "cpu", threshold=0.0)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tiny_dino, local_files_only=True)
    processor = AutoProcessor.from_pretrained(tiny_dino, local_files_only=True)
    inputs = processor(images=scene, text="person.", return_tensors="pt")
    with torch.no_grad():
        raw = processor.post_process_grounded_object_detection(model(**inputs), inputs["input_ids"], threshold=0.0,
                                                               text_threshold=grounding.TEXT_THRESHOLD)[0]["boxes"]
    kept = []  # the code's rule, read literally: drop boxes under 1% of the image, then near-copies of a kept one
    for box in raw.tolist():
        if (box[2] - box[0]) * (box[3] - box[1]) >= 0.01 and all(grounding.iou(box, k) <= 0.6 for k in kept):
            kept.append(box)
    torch.testing.assert_close(torch.tensor(boxes), torch.tensor(kept))
    assert boxes and all(0.0 <= v <= 1.0 for box in boxes for v in box)


def test_blip_scores_are_the_softmax_of_its_image_text_logits(tiny_blip_scorer, scene):
    from transformers import BlipModel, BlipProcessor

    texts = ["a person", "a dog with a bench", "a car"]
    got = grounding.blip_scores(scene, texts, tiny_blip_scorer, "cpu")
    model = BlipModel.from_pretrained(tiny_blip_scorer, local_files_only=True)
    processor = BlipProcessor.from_pretrained(tiny_blip_scorer, local_files_only=True)
    with torch.no_grad():
        logits = model(**processor(text=texts, images=scene, return_tensors="pt", padding=True)).logits_per_image[0]
    torch.testing.assert_close(got, logits.softmax(-1))


def test_halc_runs_with_the_official_detector_and_matcher_from_local_folders(toy, scene, tiny_dino,
                                                                          tiny_blip_scorer, monkeypatch):
    calls = {"dino": 0, "blip": 0}
    for name in calls:
        real = getattr(grounding, f"{name}_boxes" if name == "dino" else f"{name}_scores")
        monkeypatch.setattr(grounding, real.__name__,
                            lambda *a, _real=real, _name=name, **k: (calls.__setitem__(_name, calls[_name] + 1),
                                                                     _real(*a, **k))[1])
    with warnings.catch_warnings():  # "auto" finds both on disk: no fallback warning
        warnings.simplefilter("error", UserWarning)
        texts = halluc.generate(toy, [scene], [CAPTION], "halc", detector_model=tiny_dino, box_threshold=0.3,
                                matcher_model=tiny_blip_scorer, skip_rate=0.0, max_new_tokens=16)
    assert texts[0] and calls["dino"] > 0 and calls["blip"] > 0
    loaders = (matchers.load_grounding_dino, matchers.load_blip_scorer)
    assert all(loader.cache_info().currsize for loader in loaders)
    matchers.clear_matcher_cache()  # frees HALC's second models too
    assert not any(loader.cache_info().currsize for loader in loaders)

