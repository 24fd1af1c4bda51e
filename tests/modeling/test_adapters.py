"""Family adapters on the tiny models: module paths, image spans and grids, text-only inputs, CLS attention."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers.image_processing_utils import select_best_resolution

from halluc.errors import HallucError, MethodRefused
from halluc.modeling.families import adapter_for, model_class_for, processor_class_for
from halluc.modeling.tiny import build_tiny
from tests.conftest import FAMILY_NAMES as FAMILIES

POINTS = ["layers.0", "layers.-1", "layers.1.attn", "layers.1.attn.o_proj", "layers.0.mlp", "norm", "lm_head",
          "vision", "model"]


# ---- table ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_table_serves_each_family(family, tiny_vlm):
    model, processor = tiny_vlm(family)
    assert adapter_for(model).family == family == model.config.model_type
    assert model_class_for(model.config) is type(model)
    assert processor_class_for(model.config) is type(processor)


def test_unsupported_model_type_names_it_and_lists_supported():
    fake = SimpleNamespace(config=SimpleNamespace(model_type="gpt2"))
    supported = ("gemma3, idefics3, instructblip, internvl, llava, llava_next, llava_onevision, mistral3, qwen2_5_vl, "
                 "qwen2_vl, qwen3_vl, smolvlm")
    with pytest.raises(HallucError, match=f"'gpt2' is not supported.*{supported}"):
        adapter_for(fake)


# ---- module paths -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_resolve_every_canonical_point(family, tiny_vlm):
    model, _ = tiny_vlm(family)
    adapter = adapter_for(model)
    decoder = model.get_decoder()
    got = {point: adapter.resolve(model, point) for point in POINTS}
    assert got["layers.0"] is decoder.layers[0] and got["layers.-1"] is decoder.layers[1]
    assert got["layers.1.attn"] is decoder.layers[1].self_attn is adapter.attention(model, 1)
    assert got["layers.1.attn.o_proj"] is decoder.layers[1].self_attn.o_proj
    assert got["layers.1.attn.o_proj"].in_features == adapter.num_heads(model) * adapter.head_dim(model) == 64
    assert got["layers.0.mlp"] is decoder.layers[0].mlp
    assert got["norm"] is decoder.norm
    assert got["lm_head"] is model.get_output_embeddings()
    assert "Vision" in type(got["vision"]).__name__ and got["model"] is model
    assert (adapter.num_layers(model), adapter.num_heads(model), adapter.num_kv_heads(model)) == (2, 4, 2)
    with pytest.raises(HallucError):
        adapter.resolve(model, "layers.2")


@pytest.mark.parametrize("family", FAMILIES)
def test_resolved_layer_runs_in_generate(family, tiny_vlm, batch):
    model, _ = tiny_vlm(family)
    calls = []
    handle = adapter_for(model).resolve(model, "layers.1.attn.o_proj").register_forward_pre_hook(
        lambda _m, args: calls.append(args[0].shape))
    try:
        model.generate(**batch(family), max_new_tokens=2, min_new_tokens=2)
    finally:
        handle.remove()
    assert len(calls) == 2 and calls[0][-1] == 64  # prefill + 1 decode step, (B, T, H*D)


# ---- image spans ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_spans_cover_exactly_the_image_tokens(family, tiny_vlm, batch):
    """On a batched, left-padded input: the spans partition each row's image tokens, their grids multiply
    out, and every grid row is consecutive tokens (rows may be separated, e.g. by Mistral 3's row breaks)."""
    model, _ = tiny_vlm(family)
    inputs = batch(family)
    adapter = adapter_for(model)
    spans = adapter.image_spans(model, inputs)
    assert len(spans) == 2 and (inputs["attention_mask"][:, 0] == 0).any()  # left-padded
    for row, row_spans in enumerate(spans):
        expected = (inputs["input_ids"][row] == model.config.image_token_id).nonzero().flatten()
        assert len(expected) and torch.equal(torch.cat([s.positions for s in row_spans]), expected)
        assert torch.equal(expected, adapter.image_mask(model, inputs["input_ids"])[row].nonzero().flatten())
        for span in row_spans:
            rows, cols = span.grid
            assert rows * cols == len(span.positions)
            assert (span.positions.view(rows, cols).diff(dim=1) == 1).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_rows_have_the_spans_of_each_sample_alone(family, tiny_vlm, batch, pil_images, prompts):
    """Each row of the left-padded batch has the spans its sample has alone, shifted by its padding."""
    model, processor = tiny_vlm(family)
    adapter, inputs = adapter_for(model), batch(family)
    together = adapter.image_spans(model, inputs)
    for i in range(2):
        alone = adapter.image_spans(model, adapter.build_inputs(processor, pil_images[i:i + 1], prompts[i:i + 1]))[0]
        shift = int((inputs["attention_mask"][i] == 0).sum())
        assert [(s.kind, s.grid) for s in together[i]] == [(s.kind, s.grid) for s in alone]
        assert all(torch.equal(a.positions + shift, b.positions) for a, b in zip(alone, together[i]))


# what each family's vision stack hands the LM, image by image (the features its image tokens carry)
IMAGE_FEATURES = {
    "llava": lambda m, i: m.model.get_image_features(pixel_values=i["pixel_values"]).pooler_output,
    "llava_next": lambda m, i: m.model.get_image_features(i["pixel_values"], i["image_sizes"]).pooler_output,
    "qwen2_vl": lambda m, i: m.model.get_image_features(i["pixel_values"], i["image_grid_thw"]).pooler_output,
    "qwen2_5_vl": lambda m, i: m.model.get_image_features(i["pixel_values"], i["image_grid_thw"]).pooler_output,
    "qwen3_vl": lambda m, i: m.model.get_image_features(i["pixel_values"], i["image_grid_thw"]).pooler_output,
    "internvl": lambda m, i: m.model.get_image_features(i["pixel_values"], vision_feature_layer=-1,
                                                        vision_feature_select_strategy="default").pooler_output,
    "llava_onevision": lambda m, i: m.model.get_image_features(i["pixel_values"], i["image_sizes"],
                                                               batch_num_images=i["batch_num_images"]).pooler_output,
    "gemma3": lambda m, i: m.model.get_image_features(i["pixel_values"]).pooler_output,
    "idefics3": lambda m, i: m.model.get_image_features(i["pixel_values"], i["pixel_attention_mask"]).pooler_output,
    "smolvlm": lambda m, i: m.model.get_image_features(i["pixel_values"], i["pixel_attention_mask"]).pooler_output,
    "mistral3": lambda m, i: m.model.get_image_features(i["pixel_values"], i["image_sizes"]).pooler_output,
}


@pytest.mark.parametrize("family", sorted(IMAGE_FEATURES))
def test_spans_carry_the_vision_features_in_order(family, tiny_vlm, batch):
    """The LM's input at the spans' positions, row by row and span by span, is exactly the vision stack's
    output for the batch's images, in order: each span is the image part it claims to be."""
    model, _ = tiny_vlm(family)
    adapter, inputs = adapter_for(model), batch(family)
    with torch.no_grad():
        features = IMAGE_FEATURES[family](model, inputs)
    features = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])  # (n_image_tokens, hidden)
    seen = []
    handle = adapter.resolve(model, "layers.0").register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    spans = adapter.image_spans(model, inputs)
    carried = torch.cat([seen[0][row, span.positions] for row, row_spans in enumerate(spans) for span in row_spans])
    torch.testing.assert_close(carried, features.to(carried.dtype), rtol=0, atol=1e-6)


def test_llava_one_square_grid_per_image(tiny_vlm, batch):
    model, _ = tiny_vlm("llava")
    spans = adapter_for(model).image_spans(model, batch("llava"))
    assert [[(s.kind, s.grid) for s in row] for row in spans] == [[("image", (4, 4))]] * 2


def test_llava_next_grids_match_processor_and_newlines(tiny_vlm, batch):
    model, processor = tiny_vlm("llava_next")
    inputs = batch("llava_next")
    spans = adapter_for(model).image_spans(model, inputs)
    with torch.no_grad():
        features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    grids = []
    for (base, tiles), (h, w), feats in zip(spans, inputs["image_sizes"].tolist(), features):
        assert (base.kind, base.grid, tiles.kind) == ("base", (4, 4), "tiles")
        best_h, best_w = select_best_resolution([h, w], processor.image_processor.image_grid_pinpoints)
        unpadded, newlines = processor._get_unpadded_features(h, w, 4, 4, best_h // 28, best_w // 28)
        assert tiles.grid == (newlines, unpadded // newlines + 1)
        n_tokens = processor._get_num_multimodal_tokens(image_sizes=[(h, w)]).num_image_tokens
        assert n_tokens == [16 + len(tiles.positions)]
        # the last column of the tiles grid is the learned newline embedding, and only it
        tile_feats = feats[16:].view(*tiles.grid, -1)  # (rows, cols + 1, hidden)
        newline = model.model.image_newline
        assert torch.equal(tile_feats[:, -1], newline.expand(tiles.grid[0], -1))
        assert not torch.isclose(tile_feats[:, :-1], newline).all(-1).any()
        grids.append(tiles.grid)
    assert grids[0] != grids[1]  # landscape vs portrait image


@pytest.mark.parametrize("size", [(28, 28), (30, 40), (50, 20), (100, 30), (17, 90), (64, 64), (300, 200)])
def test_llava_next_grid_arithmetic_matches_processor(size, tiny_vlm):
    from halluc.modeling.llava_next import image_grids
    model, processor = tiny_vlm("llava_next")
    base, (rows, cols) = image_grids(model.config, size)
    best_h, best_w = select_best_resolution(list(size), processor.image_processor.image_grid_pinpoints)
    unpadded, newlines = processor._get_unpadded_features(*size, 4, 4, best_h // 28, best_w // 28)
    assert base == (4, 4) and (rows, rows * (cols - 1)) == (newlines, unpadded)
    assert processor._get_num_multimodal_tokens(image_sizes=[size]).num_image_tokens == [16 + rows * cols]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_qwen_grids_follow_mrope_positions(family, tiny_vlm, batch, pil_images):
    model, processor = tiny_vlm(family)
    inputs = batch(family)
    spans = adapter_for(model).image_spans(model, inputs)
    positions, _ = model.model.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                                             image_grid_thw=inputs["image_grid_thw"],
                                             attention_mask=inputs["attention_mask"])  # (3, B, T)
    for row, ((span,), image, (t, h, w)) in enumerate(zip(spans, pil_images, inputs["image_grid_thw"].tolist())):
        rows, cols = span.grid
        assert (rows, cols) == (h // 2, w // 2) and t == 1
        n_tokens = processor._get_num_multimodal_tokens(image_sizes=[(image.height, image.width)]).num_image_tokens
        assert n_tokens == [rows * cols]
        # M-RoPE gives each image token its (row, col): row-major layout == the span's grid
        pos_h = positions[1, row, span.positions].view(rows, cols)
        pos_w = positions[2, row, span.positions].view(rows, cols)
        assert torch.equal(pos_h - pos_h[0, 0], torch.arange(rows)[:, None].expand(rows, cols))
        assert torch.equal(pos_w - pos_w[0, 0], torch.arange(cols)[None, :].expand(rows, cols))
    assert spans[0][0].grid != spans[1][0].grid


def test_instructblip_queries_have_no_2d_grid(tiny_vlm, batch):
    model, _ = tiny_vlm("instructblip")
    inputs = batch("instructblip")
    spans = adapter_for(model).image_spans(model, inputs)
    assert [[(s.kind, s.grid) for s in row] for row in spans] == [[("queries", (1, 8))]] * 2
    # left padding sits in front of the queries, as for any other family
    for row, (span,) in zip(inputs["attention_mask"], spans):
        assert row[:span.positions[0]].sum() == 0 and row[span.positions[0]:].all()


def test_internvl_tiles_then_thumbnail(tiny_vlm, batch, pil_images):
    model, processor = tiny_vlm("internvl")
    spans = adapter_for(model).image_spans(model, batch("internvl"))
    for row, image in zip(spans, pil_images):
        tiles = processor.image_processor.get_number_of_image_patches(image.height, image.width, {})
        assert len(row) == tiles and all(s.grid == (4, 4) for s in row)
        assert [s.kind for s in row] == (["tile"] * (tiles - 1) + ["image"] if tiles > 1 else ["image"])
    assert len(spans[0]) != len(spans[1])  # landscape: one tile; portrait: crops and the thumbnail


@pytest.mark.parametrize("size", [(28, 28), (30, 40), (50, 20), (100, 30), (17, 90), (64, 64), (300, 200), (90, 84)])
def test_llava_onevision_grid_arithmetic_matches_processor(size, tiny_vlm):
    from halluc.modeling.llava_onevision import image_grids
    model, processor = tiny_vlm("llava_onevision")
    base, (rows, cols) = image_grids(model.config, size)
    assert base == (4, 4)
    assert processor._get_number_of_features(*size, 28, 28) == 16 + rows * cols  # base + tiles with newlines


def test_llava_onevision_newline_column_and_shrunk_tiles(tiny_vlm, pil_images):
    from PIL import Image
    model, processor = tiny_vlm("llava_onevision")
    adapter = adapter_for(model)
    big = Image.new("RGB", (84, 84), (10, 200, 30))  # 3x3 tiles: 12x12 cells > 4 tiles' worth, shrunk to 8x8
    inputs = adapter.build_inputs(processor, [big, pil_images[1]], ["What?", "What?"])
    spans = adapter.image_spans(model, inputs)
    assert spans[0][1].grid == (8, 9)
    with torch.no_grad():
        features = IMAGE_FEATURES["llava_onevision"](model, inputs)
    for (base, tiles), feats in zip(spans, features):
        tile_feats = feats[16:].view(*tiles.grid, -1)  # the last column is the learned newline, and only it
        assert torch.equal(tile_feats[:, -1], model.model.image_newline.expand(tiles.grid[0], -1))
        assert not torch.isclose(tile_feats[:, :-1], model.model.image_newline).all(-1).any()


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_idefics3_one_grid_per_sub_image(family, tiny_vlm, batch, pil_images):
    model, processor = tiny_vlm(family)
    spans = adapter_for(model).image_spans(model, batch(family))
    for row, image in zip(spans, pil_images):
        info = processor.image_processor([image], return_row_col_info=True, return_tensors="pt")
        crops = info["rows"][0][0] * info["cols"][0][0]
        assert [s.kind for s in row] == ["tile"] * crops + ["image"] and all(s.grid == (4, 4) for s in row)


def test_gemma3_one_pooled_grid_per_image_and_bidirectional_block(tiny_vlm, batch):
    model, _ = tiny_vlm("gemma3")
    inputs = batch("gemma3")
    spans = adapter_for(model).image_spans(model, inputs)
    assert [[(s.kind, s.grid) for s in row] for row in spans] == [[("image", (4, 4))]] * 2
    for row, (span,) in zip(inputs["token_type_ids"], spans):  # the processor marks exactly the image block
        assert torch.equal(row.nonzero().flatten(), span.positions)


def test_mistral3_grids_skip_the_row_breaks(tiny_vlm, batch):
    model, processor = tiny_vlm("mistral3")
    inputs = batch("mistral3")
    spans = adapter_for(model).image_spans(model, inputs)
    for ids, (span,), (h, w) in zip(inputs["input_ids"], spans, inputs["image_sizes"].tolist()):
        rows, cols = span.grid
        assert (rows, cols) == (h // 8, w // 8)
        grid = span.positions.view(rows, cols)
        ends = ids[grid[:, -1] + 1].tolist()  # the token after each grid row
        assert ends == [processor.image_break_token_id] * (rows - 1) + [processor.image_end_token_id]
    assert spans[0][0].grid != spans[1][0].grid


# ---- text-only inputs -------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_inputs_are_the_same_prompt_without_image(family, tiny_vlm, prompts):
    model, processor = tiny_vlm(family)
    adapter = adapter_for(model)
    inputs = adapter.build_inputs(processor, None, prompts)
    assert set(inputs) <= {"input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"}
    assert not adapter.image_mask(model, inputs["input_ids"]).any()
    assert not inputs.get("mm_token_type_ids", torch.zeros(1)).any() and not inputs.get("token_type_ids",
                                                                                        torch.zeros(1)).any()
    assert inputs["attention_mask"][1, 0] == 0  # left-padded
    bos = processor.tokenizer.bos_token_id
    for ids, mask, text in zip(inputs["input_ids"], inputs["attention_mask"], prompts):
        prompt = adapter.prompt(processor, text, with_image=False)
        # a template that writes the BOS itself is tokenized without a second one
        expected = processor.tokenizer(prompt, add_special_tokens=not prompt.startswith(str(
            processor.tokenizer.bos_token)))["input_ids"]
        assert ids[mask.bool()].tolist() == expected
        assert ids[mask.bool()].tolist().count(bos) <= 1
    lm = adapter.text_model(model)
    out = lm.generate(**inputs, max_new_tokens=3, min_new_tokens=3)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)


# ---- vision CLS attention ---------------------------------------------------------------------
def _reference_cls_attention(family, inputs, feature_layer):
    """CLS row of the eager vision tower's attention map, head-averaged, CLS column dropped."""
    model, _ = build_tiny(family, attn_implementation={"text_config": "sdpa", "vision_config": "eager"})
    pixels = inputs["pixel_values"] if family == "llava" else inputs["pixel_values"][:, 0]  # NeXT: base crop
    with torch.no_grad():
        maps = model.model.vision_tower(pixels, output_attentions=True).attentions  # per layer (N, H, T, T)
    return maps[feature_layer if feature_layer < 0 else feature_layer - 1][:, :, 0, 1:].mean(1)


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_vision_cls_attention_matches_eager_attention(family, tiny_vlm, batch):
    model, _ = tiny_vlm(family)
    inputs = batch(family)
    tower = adapter_for(model).resolve(model, "vision")
    hooks = lambda: sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in tower.modules())  # noqa: E731
    before = hooks()
    cls = adapter_for(model).vision_cls_attention(model, inputs)
    n_base = [len(row[0].positions) for row in adapter_for(model).image_spans(model, inputs)]
    assert cls.shape == (2, 16) and n_base == [16, 16]
    assert (cls >= 0).all() and (cls.sum(-1) <= 1 + 1e-6).all()
    torch.testing.assert_close(cls, _reference_cls_attention(family, inputs, model.config.vision_feature_layer))
    # computed without switching the tower to eager, and without leaving hooks behind
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert hooks() == before


@pytest.mark.parametrize("merged_heads", [False, True])
def test_cls_attention_runs_a_repeated_image_once_and_gives_every_row_its_own(merged_heads):
    """A batch asking about one image several times (POPE's questions): the tower sees the distinct images,
    and each row gets what its image gets alone."""
    from halluc.modeling.llava import clip_cls_attention

    model, _ = build_tiny("llava")
    tower = adapter_for(model).resolve(model, "vision")
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, model.config.vision_config.image_size, model.config.vision_config.image_size)
    rows = []
    handle = tower.register_forward_pre_hook(lambda m, args, kwargs: rows.append(kwargs["pixel_values"].shape[0]),
                                             with_kwargs=True)
    try:
        together = clip_cls_attention(model, tower, torch.stack([a, b, a, a]), merged_heads)
        alone = [clip_cls_attention(model, tower, x[None], merged_heads) for x in (a, b)]
    finally:
        handle.remove()
    assert rows == [2, 1, 1]
    torch.testing.assert_close(together, torch.cat([alone[0], alone[1], alone[0], alone[0]]))


@pytest.mark.parametrize("feature_layer", [-1, 1])
def test_vision_cls_attention_follows_vision_feature_layer(feature_layer, batch):
    model, _ = build_tiny("llava")
    model.config.vision_feature_layer = feature_layer
    inputs = batch("llava")
    cls = adapter_for(model).vision_cls_attention(model, inputs)
    torch.testing.assert_close(cls, _reference_cls_attention("llava", inputs, feature_layer))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "instructblip"])
def test_no_cls_attention_where_the_lm_sees_no_cls_aligned_patches(family, tiny_vlm, batch):
    model, _ = tiny_vlm(family)
    with pytest.raises(MethodRefused, match="vision CLS"):
        adapter_for(model).vision_cls_attention(model, batch(family))


def test_instructblip_language_model_is_the_causal_lm(tiny_vlm):
    model, _ = tiny_vlm("instructblip")
    lm = adapter_for(model).text_model(model)
    assert isinstance(lm, nn.Module) and lm.get_decoder() is model.get_decoder()


# ---- inputs the model needs -------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_gives_logits_for_every_position(family, tiny_vlm, batch):
    model, processor = tiny_vlm(family)
    inputs = batch(family)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, len(processor.tokenizer))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_inputs_always_carry_mm_token_type_ids(family, pil_images, prompts, monkeypatch):
    model, processor = build_tiny(family)
    monkeypatch.setattr(processor, "return_mm_token_type_ids", False)
    inputs = adapter_for(model).build_inputs(processor, pil_images, prompts)
    assert torch.equal(inputs["mm_token_type_ids"], (inputs["input_ids"] == model.config.image_token_id).int())
    assert model.generate(**inputs, max_new_tokens=1).shape[0] == 2


def test_instructblip_with_flan_t5_is_refused():
    from transformers import InstructBlipConfig
    config = InstructBlipConfig(text_config={"model_type": "t5"})
    assert not config.use_decoder_only_language_model
    with pytest.raises(HallucError, match="encoder-decoder"):
        adapter_for(SimpleNamespace(config=config))


@pytest.mark.parametrize("layout", ["processor_config", "legacy"])
def test_load_processor_reads_stock_qwen_checkpoints(layout, tiny_vlm, tmp_path):
    """A checkpoint that names the stock Qwen2VLProcessor (and a video processor) loads image-only."""
    import json

    from transformers import AutoConfig

    from halluc.modeling.families import load_processor

    model, processor = tiny_vlm("qwen2_vl")
    processor.save_pretrained(tmp_path)
    model.config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    image_config = {**saved["image_processor"], "image_processor_type": "Qwen2VLImageProcessor",
                    "processor_class": "Qwen2VLProcessor"}
    if layout == "legacy":  # preprocessor_config.json + chat_template.json, as older hub repos have
        (tmp_path / "processor_config.json").unlink()
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(image_config))
        template = (tmp_path / "chat_template.jinja").read_text()
        (tmp_path / "chat_template.jinja").unlink()
        (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    else:
        video = {"video_processor_type": "Qwen2VLVideoProcessor", "patch_size": 4}
        config = {"processor_class": "Qwen2VLProcessor", "image_processor": image_config, "video_processor": video}
        (tmp_path / "processor_config.json").write_text(json.dumps(config))
    loaded = load_processor(str(tmp_path), AutoConfig.from_pretrained(tmp_path))
    assert type(loaded) is type(processor)
    assert loaded.chat_template == processor.chat_template
    assert loaded.image_processor.to_dict()["patch_size"] == 4


# family -> (the stock processor a real checkpoint names, its image processor class, its video processor class)
STOCK_PROCESSORS = {
    "qwen3_vl": ("Qwen3VLProcessor", "Qwen2VLImageProcessor", "Qwen3VLVideoProcessor"),
    "internvl": ("InternVLProcessor", "GotOcr2ImageProcessor", "InternVLVideoProcessor"),
    "llava_onevision": ("LlavaOnevisionProcessor", "LlavaOnevisionImageProcessor", "LlavaOnevisionVideoProcessor"),
    "smolvlm": ("SmolVLMProcessor", "SmolVLMImageProcessor", "SmolVLMVideoProcessor"),
    "mistral3": ("PixtralProcessor", "PixtralImageProcessor", None),
}


@pytest.mark.parametrize("family", sorted(STOCK_PROCESSORS))
def test_load_processor_reads_stock_checkpoints_image_only(family, tiny_vlm, tmp_path):
    """A checkpoint naming the stock processor (and a video processor) loads as halluc's image-only one."""
    import json

    from PIL import Image
    from transformers import AutoConfig

    from halluc.modeling.families import load_processor

    model, processor = tiny_vlm(family)
    processor.save_pretrained(tmp_path)
    model.config.save_pretrained(tmp_path)
    stock, image_class, video_class = STOCK_PROCESSORS[family]
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    saved["processor_class"] = stock
    saved["image_processor"] = {**saved["image_processor"], "image_processor_type": image_class,
                                "processor_class": stock}
    if video_class:
        saved["video_processor"] = {"video_processor_type": video_class}
    (tmp_path / "processor_config.json").write_text(json.dumps(saved))
    loaded = load_processor(str(tmp_path), AutoConfig.from_pretrained(tmp_path))
    assert type(loaded) is type(processor) and loaded.chat_template == processor.chat_template
    image = [Image.new("RGB", (40, 30), (200, 30, 30))]
    inputs, again = (adapter_for(model).build_inputs(p, image, ["What?"]) for p in (processor, loaded))
    assert all(torch.equal(torch.as_tensor(inputs[k]), torch.as_tensor(again[k])) for k in inputs)
