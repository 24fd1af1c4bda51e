"""`halluc.hf.custom_generate`: a halluc method inside transformers' own `model.generate`, with the tokens
`halluc.generate` gives on the same inputs, on several families; what it refuses, in one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

import halluc
from halluc.errors import HallucError
from halluc.interventions import method_class, method_names

PROMPTS = ["Is there a cat in the image?", "Describe the image."]
TOY_LLAVA = Path(halluc.__file__).parent / "world" / "toy_llava"


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    noise = Image.effect_noise((48, 40), 60).convert("RGB")
    return [Image.new("RGB", (40, 32), (200, 30, 30)), noise]


def custom_tokens(m, method, pictures, prompts=PROMPTS, give=("images", "prompts"), new=6, **params):
    """New tokens per row from `m.model.generate(..., custom_generate=...)` on halluc's inputs, cut at EOS / pad
    (as `halluc.generate` reports them)."""
    inputs = m.adapter.build_inputs(m.processor, pictures, prompts)
    extra = {"images": pictures, "prompts": prompts}
    cg = halluc.hf.custom_generate(method, processor=m.processor, **params)
    out = m.model.generate(**inputs, **{k: extra[k] for k in give}, custom_generate=cg, max_new_tokens=new,
                           pad_token_id=m.processor.tokenizer.pad_token_id)
    assert out.shape[1] <= inputs["input_ids"].shape[1] + new  # the views' wider padding is not returned
    assert torch.equal(out[:, :inputs["input_ids"].shape[1]], inputs["input_ids"])
    stops = {m.processor.tokenizer.pad_token_id, m.processor.tokenizer.eos_token_id}
    return [_until(row, stops) for row in out[:, inputs["input_ids"].shape[1]:].tolist()]


def _until(row, stops):
    return row[:next((i for i, t in enumerate(row) if t in stops), len(row))]


# OPERA and HALC replace the search and yes-prompt rewrites the prompt text: both refused (below)
CUSTOM = [n for n in method_names() if n not in ("opera", "halc", "yes-prompt")]


@pytest.mark.parametrize("method", CUSTOM)
def test_every_method_gives_halluc_generate_tokens(tiny_llava, pictures, method):
    params = dict(method_class(method).example_params)
    want = halluc.generate(tiny_llava, pictures, PROMPTS, method=method, max_new_tokens=6, return_scores=True,
                           **params).tokens
    assert custom_tokens(tiny_llava, method, pictures, **params) == want


@pytest.mark.parametrize("family", ["tiny-qwen2-vl", "tiny-internvl", "tiny-gemma3", "tiny-llava-next"])
@pytest.mark.parametrize("method", ["none", "vcd", "vhr", "icd", "pai"])
def test_other_families_give_halluc_generate_tokens(tiny_models, pictures, family, method):
    m = tiny_models(family)
    want = halluc.generate(m, pictures, PROMPTS, method=method, max_new_tokens=6, return_scores=True).tokens
    assert custom_tokens(m, method, pictures) == want


def test_a_stack_with_dotted_parameters(tiny_llava, pictures):
    params = {"vcd.alpha": 0.5, "vhr.alpha": 2.0}
    want = halluc.generate(tiny_llava, pictures, PROMPTS, method=["vhr", "vcd"], max_new_tokens=6,
                           return_scores=True, **params).tokens
    assert custom_tokens(tiny_llava, "vhr+vcd", pictures, **params) == want


def test_the_readme_example_on_a_model_and_processor_loaded_with_transformers(pictures):
    """toy-llava loaded by the user with transformers, inputs from the processor's own chat template."""
    model = LlavaForConditionalGeneration.from_pretrained(TOY_LLAVA).eval()
    processor = AutoProcessor.from_pretrained(TOY_LLAVA)
    image, question = pictures[1], "Is there a dog in the image?"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    inputs = processor(text=processor.apply_chat_template(messages, add_generation_prompt=True), images=[image],
                       return_tensors="pt")
    out = model.generate(**inputs, images=[image], max_new_tokens=16,
                         custom_generate=halluc.hf.custom_generate("vcd", processor=processor, alpha=1.0),
                         return_dict_in_generate=True, output_scores=True)
    want = halluc.generate(halluc.wrap(model, processor), [image], [question], method="vcd", alpha=1.0,
                           max_new_tokens=16, return_scores=True)
    new = out.sequences[0, inputs["input_ids"].shape[1]:]
    assert processor.decode(new, skip_special_tokens=True).strip() == want.texts[0]
    assert torch.allclose(torch.stack(out.scores, 1).float(), want.scores, atol=1e-5)  # VCD's combined scores


def test_methods_acting_inside_the_model_sample_as_halluc_generate_does(tiny_llava, pictures):
    inputs = tiny_llava.adapter.build_inputs(tiny_llava.processor, pictures, PROMPTS)
    torch.manual_seed(3)
    cg = halluc.hf.custom_generate("vhr", processor=tiny_llava.processor)
    out = tiny_llava.model.generate(**inputs, prompts=PROMPTS, custom_generate=cg,
                                    max_new_tokens=6, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                    pad_token_id=tiny_llava.processor.tokenizer.pad_token_id)
    want = halluc.generate(tiny_llava, pictures, PROMPTS, "vhr", max_new_tokens=6, do_sample=True, seed=3,
                           return_scores=True).tokens
    stops = {tiny_llava.processor.tokenizer.pad_token_id, tiny_llava.processor.tokenizer.eos_token_id}
    assert [_until(r, stops) for r in out[:, inputs["input_ids"].shape[1]:].tolist()] == want


# what each method needs besides the batch (halluc/generation/hf.py's docstring and the README say the same)
NEEDS = {"vcd": {"images", "processor"}, "vhr": {"prompts", "processor"}, "vista": {"prompts", "processor"},
         "pai": {"prompts", "processor"}, "m3id": {"prompts", "processor"}, "icd": {"images", "prompts", "processor"},
         "ritual": {"images", "prompts", "processor"}, "agla": {"images", "prompts", "processor"},
         "yes-bias": {"processor"}, "logit-shift": {"processor"}}


@pytest.mark.parametrize("method", CUSTOM)
def test_what_a_method_needs_is_exactly_the_documented_set_and_a_missing_one_is_named(tiny_llava, pictures, method):
    params = dict(method_class(method).example_params)
    needs = NEEDS.get(method, set())
    inputs = tiny_llava.adapter.build_inputs(tiny_llava.processor, pictures, PROMPTS)
    before = tiny_llava.model.generate(**inputs, max_new_tokens=3)

    def run(given: set):
        extra = {k: v for k, v in (("images", pictures), ("prompts", PROMPTS)) if k in given}
        cg = halluc.hf.custom_generate(method, processor=tiny_llava.processor if "processor" in given else None,
                                       **params)
        return tiny_llava.model.generate(**inputs, **extra, custom_generate=cg, max_new_tokens=3)

    run(needs)
    for missing in sorted(needs):
        with pytest.raises(HallucError, match=f"needs the {missing}: pass {missing}="):
            run(needs - {missing})
        assert torch.equal(tiny_llava.model.generate(**inputs, max_new_tokens=3), before)  # nothing left behind


def test_what_custom_generate_does_not_run_is_refused_in_one_line(tiny_llava, tiny_models, pictures):
    inputs = tiny_llava.adapter.build_inputs(tiny_llava.processor, pictures, PROMPTS)
    with pytest.raises(HallucError, match="'opera' replaces transformers' whole search"):
        halluc.hf.custom_generate("opera")
    with pytest.raises(HallucError, match="'yes-prompt' rewrites the prompt text, which custom_generate receives"):
        halluc.hf.custom_generate("vhr+yes-prompt")
    with pytest.raises(HallucError, match="unknown method 'vcdd'"):
        halluc.hf.custom_generate("vcdd")
    with pytest.raises(HallucError, match="no parameter 'alpah'"):
        halluc.hf.custom_generate("vcd", alpah=1)
    with pytest.raises(HallucError, match="for beam search use halluc.generate"):
        tiny_llava.model.generate(**inputs, custom_generate=halluc.hf.custom_generate("vhr"), num_beams=2,
                                  max_new_tokens=3)
    with pytest.raises(HallucError, match="'vcd' decodes extra views: with custom_generate it runs greedy"):
        tiny_llava.model.generate(**inputs, images=pictures, do_sample=True, max_new_tokens=3,
                                  custom_generate=halluc.hf.custom_generate("vcd", processor=tiny_llava.processor))
    with pytest.raises(HallucError, match="got 1 images for a batch of 2 rows"):
        tiny_llava.model.generate(**inputs, images=pictures[:1], max_new_tokens=3,
                                  custom_generate=halluc.hf.custom_generate("vcd", processor=tiny_llava.processor))
    blip = tiny_models("tiny-instructblip")
    blip_inputs = blip.adapter.build_inputs(blip.processor, pictures, PROMPTS)
    with pytest.raises(HallucError, match="a model without a vision tower"):
        blip.model.generate(**blip_inputs, custom_generate=halluc.hf.custom_generate("vaf"), max_new_tokens=3)
