"""VTI: the steering formula, the vectors (mean + PC1 with the code's sign rule and reshape), per-step logits
on toy-llava against a literal plain-tensor reading of spec §5, the cache, and `halluc calibrate vti`."""
import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import halluc
from halluc.cli.app import app
from halluc.engine import steering
from halluc.engine.calibration_sets import CALIBRATION_SETS, CalibrationRecord
from halluc.engine.steering import CalibrationSettings, masked_pixels, obtain, principal_direction, steer
from halluc.errors import HallucError
from halluc.interventions.vti import VTI
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, first_logits
from tests.interventions.manual_lm import Edits, ManualLM

SMALL = {"num_demos": 3, "num_trials": 2}
STEPS = 5


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 7))


def literal_direction(deltas: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (D,): mean + PC1, PC1 signed by the record with the largest |projection| (sklearn's svd_flip)."""
    mean = deltas.mean(0)
    centred = deltas - mean
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axis = vh[0]
    scores = centred @ axis
    return mean + axis * torch.sign(scores[scores.abs().argmax()])


def test_direction_is_mean_plus_signed_first_axis():
    mean = torch.tensor([1.0, 2.0, 3.0])
    e1 = torch.tensor([1.0, 0.0, 0.0])
    for t, sign in (([3.0, -1.0, -2.0], 1), ([-3.0, 1.0, 2.0], -1)):
        deltas = mean + torch.tensor(t)[:, None] * e1
        torch.testing.assert_close(principal_direction(deltas[None])[0], mean + sign * e1)
    batch = torch.randn(4, 6, 5)
    torch.testing.assert_close(principal_direction(batch), torch.stack([literal_direction(b) for b in batch]))


def test_steer_keeps_the_norm_and_turns_toward_the_direction():
    x, d = torch.randn(2, 3, 8), torch.randn(8)
    u = F.normalize(d, dim=-1)
    out = steer(x, u, 0.9)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    assert (F.cosine_similarity(out, u.expand_as(x), dim=-1) > F.cosine_similarity(x, u.expand_as(x), dim=-1)).all()
    want = F.normalize(F.normalize(x, dim=-1) + 0.1 * 0.9 * u, dim=-1) * x.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(steer(x, u, 0.0), x)


def test_masking_blanks_the_share_of_patches_with_the_channel_mean():
    pixels = torch.randn(1, 3, 28, 28)
    out = masked_pixels(pixels, 7, 0.75, torch.Generator().manual_seed(0))
    mean = pixels[0].mean((1, 2))
    patches = out[0].unfold(1, 7, 7).unfold(2, 7, 7)  # (C, 4, 4, 7, 7)
    blank = (patches == mean[:, None, None, None, None]).all(-1).all(-1).all(0)  # (4, 4)
    assert blank.sum() == 12  # int(0.75 · 16)
    assert torch.equal(patches[:, ~blank], pixels[0].unfold(1, 7, 7).unfold(2, 7, 7)[:, ~blank])
    flat = torch.randn(8, 3 * 4)  # Qwen2-VL rows: one patch each, channels first
    rows = masked_pixels(flat, 2, 0.5, torch.Generator().manual_seed(0)).view(8, 3, 4)
    assert ((rows == flat.view(8, 3, 4).mean((0, 2))[None, :, None]).all(-1).all(-1)).sum() == 4


def literal_vectors(toy, records, trials, ratio, seed):
    """Spec §5.1 read literally on toy-llava: hidden states from the model's own outputs (the LM's
    `hidden_states`, the CLIP tower's `hidden_states`), plain SVD."""
    text, vision = [], []
    generator = torch.Generator().manual_seed(seed)
    tower = toy.model.model.vision_tower
    with torch.no_grad():
        for r in records:
            last = []
            for caption in (r.good, r.hallucinated):
                inputs = toy.adapter.build_inputs(toy.processor, [r.image], [r.question], answers=[caption])
                states = toy.model(**inputs, output_hidden_states=True).hidden_states
                last.append(torch.stack([h[0, -1] for h in states]))
            text.append((last[0] - last[1]).flatten())
            pixels = toy.adapter.build_inputs(toy.processor, [r.image], [r.question])["pixel_values"]
            clean = torch.stack(tower(pixels, output_hidden_states=True).hidden_states)[:, 0]  # (L_v+1, T, d)
            masked = [torch.stack(tower(masked_pixels(pixels, steering.patch_size(toy.model), ratio, generator),
                                        output_hidden_states=True).hidden_states)[:, 0] for _ in range(trials)]
            vision.append(torch.stack(masked).mean(0) - clean)
    layers = len(toy.model.model.language_model.layers) + 1
    d = text[0].numel() // layers
    text_vectors = literal_direction(torch.stack(text)).view(layers, d)[1:]
    lv, t, dv = vision[0].shape
    rows = torch.stack([v.reshape(t, -1) for v in vision], 1)  # the code's (T, N, (L_v+1)·d) reinterpretation
    tokens = torch.stack([literal_direction(row) for row in rows]).reshape(lv, t, dv)[1:]
    mean = literal_direction(torch.stack([v.mean(1).flatten() for v in vision])).view(lv, dv)[1:]  # token means
    return text_vectors, tokens, mean


def test_vectors_match_a_literal_reading(toy):
    records = CALIBRATION_SETS.get("world")()
    chosen = steering.sample_records(records, 3, 42)
    got = steering.compute_vectors(toy, chosen, vision=True, num_trials=2, mask_ratio=0.99, seed=42)
    want_text, want_tokens, want_mean = literal_vectors(toy, chosen, 2, 0.99, 42)
    torch.testing.assert_close(got.text, want_text, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.vision_tokens, want_tokens, atol=1e-4, rtol=1e-4)
    assert got.vision_mean.shape == (want_tokens.shape[0], want_tokens.shape[-1])
    torch.testing.assert_close(got.vision_mean, want_mean, atol=1e-4, rtol=1e-4)  # the varying-count direction


def literal_vti(toy, inputs, tokens, vectors, alpha_text, alpha_image):
    """Per-step logits with every decoder MLP output and every CLIP MLP output (per token) rotated."""
    def rotate(x, d, alpha):
        return F.normalize(F.normalize(x, dim=-1) + 0.1 * alpha * F.normalize(d, dim=-1), dim=-1) * \
            x.norm(dim=-1, keepdim=True)

    layers = toy.model.model.vision_tower.encoder.layers
    handles = [layer.mlp.register_forward_hook(
        lambda m, a, out, i=i: rotate(out, vectors.vision_tokens[i], alpha_image)) for i, layer in enumerate(layers)]
    manual = ManualLM(toy)
    try:
        embeddings = manual.embeddings(inputs)
    finally:
        for h in handles:
            h.remove()
    edits = Edits(mlp=lambda i, x, f: rotate(f, vectors.text[i], alpha_text))
    out, hidden = [], manual.forward(embeddings, edits)
    for token in tokens:
        out.append(manual.logits(hidden)[0])
        hidden = manual.forward(manual.token_embedding(token), edits)
    return torch.stack(out)


@pytest.mark.parametrize("alphas", [(0.9, 0.9), (4.0, 0.0), (0.0, 4.0)], ids=["default", "text", "image"])
def test_per_step_logits_match_a_literal_reading(toy, scene, alphas):
    prompt = "Describe this image."
    params = {"alpha_text": alphas[0], "alpha_image": alphas[1], **SMALL}
    got = halluc.generate(toy, [scene], [prompt], "vti", max_new_tokens=STEPS, return_scores=True, **params)
    vectors, _ = obtain("vti", toy, CalibrationSettings("", 3, 42, 2, 0.99))
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    want = literal_vti(toy, inputs, got.tokens[0], vectors, *alphas)
    torch.testing.assert_close(got.scores[0, :len(want)], want, atol=1e-4, rtol=1e-4)
    plain = halluc.generate(toy, [scene], [prompt], max_new_tokens=1, return_scores=True).scores[0, 0]
    assert not torch.allclose(got.scores[0, 0], plain, atol=1e-4)


def test_zero_alphas_are_the_identity_and_compute_nothing(tiny_llava, images, monkeypatch):
    monkeypatch.setattr(steering, "compute_vectors", lambda *a, **k: pytest.fail("computed"))
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "vti", alpha_text=0.0, alpha_image=0.0), vanilla)


def test_vectors_are_cached_by_model_and_settings(tiny_llava, images, capsys, monkeypatch):
    settings = CalibrationSettings("", 2, 7, 1, 0.5)
    _, path = obtain("vti", tiny_llava, settings)
    assert path.is_file() and path.suffix == ".safetensors"
    assert "computing steering vectors" not in capsys.readouterr().err  # no note asked for
    steering._MEMORY.clear()
    monkeypatch.setattr(steering, "compute_vectors", lambda *a, **k: pytest.fail("not read from the cache"))
    assert obtain("vti", tiny_llava, settings)[1] == path  # a hit: read back, not recomputed
    monkeypatch.undo()
    other = obtain("vti", tiny_llava, CalibrationSettings("", 2, 7, 2, 0.5))[1]  # another setting: another file
    assert other != path and other.is_file()


def test_first_use_computes_on_the_default_set_with_a_note(tiny_llava, images, capsys):
    halluc.generate(tiny_llava, images, PROMPTS, "vti", max_new_tokens=1, num_demos=2, num_trials=1,
                    calibration_seed=5)
    assert "vti: computing steering vectors of tiny-llava on the 'world' calibration set" in capsys.readouterr().err
    halluc.generate(tiny_llava, images, PROMPTS, "vti", max_new_tokens=1, num_demos=2, num_trials=1,
                    calibration_seed=5)
    assert "computing" not in capsys.readouterr().err  # once


def test_a_corrupt_or_foreign_cache_file_is_one_line(tiny_llava):
    settings = CalibrationSettings("", 2, 8, 1, 0.5)
    _, path = obtain("vti", tiny_llava, settings)
    steering._MEMORY.clear()
    path.write_bytes(b"\x00garbage")
    with pytest.raises(HallucError, match=r"vectors cache file .* is corrupt .*halluc calibrate"):
        obtain("vti", tiny_llava, settings)
    vectors = steering.SteeringVectors(torch.zeros(2, 4), None, None)
    steering.save_vectors(path, vectors, {"weights": "another model"})
    with pytest.raises(HallucError, match="another model or calibration"):
        obtain("vti", tiny_llava, settings)
    path.unlink()


def test_parameters_are_validated():
    with pytest.raises(HallucError, match="'calibration' must be"):
        VTI(calibration="../elsewhere")
    for bad in ({"mask_ratio": 0.0}, {"num_demos": 1}, {"alpha_text": -1.0}, {"num_trials": 0}):
        with pytest.raises(HallucError):
            VTI(**bad)
    assert VTI(calibration="world").settings().calibration == "world"


def write_demos(folder, n=3):
    lines = []
    for i in range(n):
        render_scene(scene_at(TRAIN_WORLD, "val", i)).save(folder / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "question": "Describe this image.",
                                 "value": "A kitchen with a cup.", "h_value": "A kitchen with a dog."}))
    (folder / "demos.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "demos.jsonl"


def test_calibrate_api_names_the_set_by_content_and_generate_finds_it(tiny_llava, images, tmp_path):
    data = write_demos(tmp_path)
    result = halluc.calibrate(tiny_llava, "vti", data=data, num_demos=3, num_trials=1)
    assert len(result["calibration"]) == 64 and result["records"] == 3
    params = {"calibration": result["calibration"], "num_demos": 3, "num_trials": 1}
    assert not torch.allclose(first_logits(tiny_llava, images, "vti", **params), first_logits(tiny_llava, images))
    with pytest.raises(HallucError, match="no vectors of calibration set .*`halluc calibrate vti --model"):
        first_logits(tiny_llava, images, "vti", **{**params, "num_trials": 2})  # never calibrated so


def test_calibrate_refuses_bad_records_in_one_line(tiny_llava, tmp_path):
    data = write_demos(tmp_path)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "../0.png", "question": "q", "value": "a",
                                                    "h_value": "b"}) + "\n")
    with pytest.raises(HallucError, match="leaves its folder"):
        halluc.calibrate(tiny_llava, "vti", data=tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"image": "0.png"}\n')
    with pytest.raises(HallucError, match="lacks question, value, h_value"):
        halluc.calibrate(tiny_llava, "vti", data=tmp_path / "bad.jsonl")
    with pytest.raises(HallucError, match="reads no calibration set"):
        halluc.calibrate(tiny_llava, "vcd", data=data)
    records = [CalibrationRecord(None, "q", "a", "b")]
    with pytest.raises(HallucError, match="must be an object"):
        halluc.calibrate(tiny_llava, "vti", records=records)


def test_calibrate_refuses_what_it_would_ignore_or_cannot_do_in_one_line(tiny_llava, tmp_path, monkeypatch):
    data = write_demos(tmp_path)
    with pytest.raises(HallucError, match="method 'vti' has no parameter 'num_demo'"):
        halluc.calibrate(tiny_llava, "vti", data=data, num_demo=3)
    with pytest.raises(HallucError, match="images is the folder of your records' image paths; give data or records"):
        halluc.calibrate(tiny_llava, "vti", images=tmp_path)
    for hostile in ("/etc/passwd.png", "../0.png", str(tmp_path / "0.png")):  # absolute paths leave the folder too
        (tmp_path / "bad.jsonl").write_text(json.dumps({"image": hostile, "question": "q", "value": "a",
                                                        "h_value": "b"}) + "\n")
        with pytest.raises(HallucError, match="bad.jsonl:1: image"):
            halluc.calibrate(tiny_llava, "vti", data=tmp_path / "bad.jsonl", images=tmp_path / "sub")
    unwritable = tmp_path / "a-file"
    unwritable.write_text("")
    monkeypatch.setenv("HALLUC_CACHE", str(unwritable))  # the cache folder would sit under a file
    with pytest.raises(HallucError, match="cannot write the vectors cache in .*HALLUC_CACHE"):
        halluc.calibrate(tiny_llava, "vti", data=data, num_demos=2, num_trials=1, calibration_seed=5)


def test_calibrate_takes_records_and_counts_what_it_used(tiny_llava, tmp_path):
    records = [{"image": render_scene(scene_at(TRAIN_WORLD, "val", i)), "question": "Describe this image.",
                "value": "A kitchen with a cup.", "h_value": "A kitchen with a dog."} for i in range(3)]
    result = halluc.calibrate(tiny_llava, "vti", records=records, num_demos=2, num_trials=1)
    assert result["records"] == 2 and len(result["calibration"]) == 64  # num_demos of 3 drawn
    again = halluc.calibrate(tiny_llava, "vti", records=records, num_demos=50, num_trials=1)
    assert again["records"] == 3  # capped at what there is, not the num_demos asked for


def test_calibrate_command(tmp_path):
    data = write_demos(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "vti", "--model", "tiny-llava", "--data", str(data), "--num-demos", "3",
                                 "--num-trials", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(".safetensors")
    assert "--param calibration=" in result.stderr
    bad = runner.invoke(app, ["calibrate", "vti", "--model", "tiny-llava", "--mask-ratio", "2"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "mask_ratio" in bad.stderr


def test_varying_token_counts_use_the_per_layer_mean(tiny_models):
    qwen = tiny_models("tiny-qwen2-vl")
    from PIL import Image
    records = [CalibrationRecord(Image.new("RGB", size, color), "Describe.", "A cup.", "A dog.")
               for size, color in (((32, 32), "red"), ((48, 32), "blue"), ((32, 64), "green"))]
    vectors = steering.compute_vectors(qwen, records, vision=True, num_trials=1, mask_ratio=0.5, seed=0)
    layers = len(qwen.adapter.vision_layers(qwen.model))
    assert vectors.vision_tokens is None and vectors.vision_mean.shape[0] == layers
    texts = halluc.generate(qwen, [records[0].image, records[1].image], ["Describe.", "Describe."], "vti",
                            max_new_tokens=2, **SMALL)
    assert len(texts) == 2


@pytest.mark.parametrize("other", ["vcd", "pai"])
def test_stacks_with_decoding_and_in_model_methods(tiny_llava, images, other):
    got = halluc.generate(tiny_llava, images, PROMPTS, ["vti", other], max_new_tokens=3, return_scores=True,
                          **{f"vti.{k}": v for k, v in SMALL.items()})
    assert not got.scores.isnan().any()
    alone = halluc.generate(tiny_llava, images, PROMPTS, other, max_new_tokens=3, return_scores=True)
    assert not torch.allclose(got.scores[:, 0], alone.scores[:, 0])  # VTI's steering acts inside the stack
