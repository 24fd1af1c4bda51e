"""Idefics3 and SmolVLM: a SigLIP-style tower on square sub-images, a pixel-shuffle connector and a Llama LM.

Image splitting: the processor resizes an image so its longest edge is `size` (4 x 364 px on the real
checkpoints), cuts it into rows x cols sub-images of `max_image_size` (364 px) and appends the whole
image resized to one sub-image (the "global" image). Each sub-image becomes `image_seq_len` tokens:
(image_size / patch_size)**2 patches pixel-shuffled `scale_factor` x `scale_factor` -> 1, a
(side, side) grid in row-major order. The prompt spells the layout out with text tokens between the
sub-images:

    <fake_token_around_image><row_1_col_1><image>*n<fake_token_around_image><row_1_col_2><image>*n ... \\n
    ... \\n\\n<fake_token_around_image><global-img><image>*n<fake_token_around_image>

so every sub-image is one contiguous run of image tokens, preceded by its tag. The adapter gives one
(side, side) span per run: kind "tile" after a `<row_i_col_j>` tag, kind "image" after `<global-img>`
(the last run of every image; an image small enough not to be split is only that). The tag ids are
not in the model config; the tag before a row's last run is always `<global-img>`, which names it.

SmolVLM-Instruct (v1) is an Idefics3 model (model type "idefics3"); SmolVLM2 has its own model type
("smolvlm") with the same layout, and a video processor that halluc leaves out (it needs torchvision).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import AutoProcessor, SmolVLMProcessor
from transformers.processing_utils import ProcessorMixin

from halluc.errors import HallucError
from halluc.modeling.base import Adapter, HFModel, ImageSpan, ModulePaths, contiguous_runs, square_side
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import IDEFICS3_TEMPLATE, SMOLVLM_TEMPLATE, byte_tokenizer, llama_text

# what the processor expands or wraps around image positions (a sub-image is <row_R_col_C>)
IDEFICS3_PLACEHOLDERS = ("<image>", "<fake_token_around_image>", "<global-img>", r"re:<row_\d+_col_\d+>", "<video>")

ROW_COL_TAGS = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]


class SmolVLMImageOnlyProcessor(SmolVLMProcessor):
    """SmolVLMProcessor without a video processor (its video processor needs torchvision; images do not).

    The stock `__init__` also refuses to run without `num2words`, which only its video prompts use, so
    this one sets the same attributes itself and goes straight to `ProcessorMixin.__init__`.
    """

    def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None,
                 **kwargs):
        self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
        self.image_token = getattr(tokenizer, "image_token", "<image>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
        self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
        self.image_seq_len = image_seq_len
        self.video_token = getattr(tokenizer, "video_token", "<video>")
        ProcessorMixin.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def apply_chat_template(self, conversation, *args, **kwargs):
        # the stock one reads the (absent) video processor's frame settings; image prompts need none of them
        return ProcessorMixin.apply_chat_template(self, conversation, *args, **kwargs)


AutoProcessor.register(f"halluc:{SmolVLMImageOnlyProcessor.__name__}", SmolVLMImageOnlyProcessor)


@dataclass(frozen=True)
class Idefics3Adapter(Adapter):
    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """One (side, side) span per sub-image: "tile" for the crops, "image" for each global image."""
        per_image = tokens_per_sub_image(model.config)
        side = square_side(per_image, self.family)
        spans = []
        for ids, row in zip(inputs["input_ids"], self.image_mask(model, inputs["input_ids"])):
            runs = contiguous_runs(row.nonzero().flatten())
            if any(len(run) != per_image for run in runs):
                raise HallucError(f"{self.family}: image token runs of {[len(r) for r in runs]}, "
                                  f"expected {per_image} per sub-image")
            global_tag = int(ids[runs[-1][0] - 1]) if runs else None  # the tag before a row's last run
            spans.append([ImageSpan(run, (side, side), "image" if int(ids[run[0] - 1]) == global_tag else "tile")
                          for run in runs])
        return spans


def tokens_per_sub_image(config) -> int:
    """LM tokens per sub-image: (image_size / patch_size)**2 patches, pixel-shuffled by scale_factor."""
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 // config.scale_factor ** 2


IDEFICS3_PATHS = ModulePaths(layers="model.text_model.layers", final_norm="model.text_model.norm",
                             lm_head="lm_head", vision_tower="model.vision_model")


def _tiny(model_type: str) -> tuple[Any, Any, type]:
    import transformers
    prefix = "Idefics3" if model_type == "idefics3" else "SmolVLM"
    bos = "<|begin_of_text|>" if model_type == "idefics3" else "<|im_start|>"
    specials = [bos, "<|end_of_text|>", "<fake_token_around_image>", "<image>", "<end_of_utterance>",
                "<global-img>", *ROW_COL_TAGS]
    # Idefics3-8B's Llama-3 tokenizer adds <|begin_of_text|> (the template writes it too); SmolVLM's adds nothing
    tok = byte_tokenizer(specials, bos=bos if model_type == "idefics3" else None, eos="<end_of_utterance>",
                         pad="<|end_of_text|>")
    if model_type == "smolvlm":
        tok.bos_token = bos
    # 32-px sub-images of 4-px patches: 8x8 patches -> 4x4 = 16 tokens each; images resized to a 64-px longest
    # edge, so up to 2x2 crops plus the global image
    image_processor = getattr(transformers, f"{prefix}ImageProcessorPil")(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True)
    processor_class = transformers.Idefics3Processor if model_type == "idefics3" else SmolVLMImageOnlyProcessor
    processor = processor_class(image_processor=image_processor, tokenizer=tok, image_seq_len=16,
                                chat_template=IDEFICS3_TEMPLATE if model_type == "idefics3" else SMOLVLM_TEMPLATE)
    vision = getattr(transformers, f"{prefix}VisionConfig")(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                             num_attention_heads=4, image_size=32, patch_size=4)
    text = llama_text(tok)
    text.bos_token_id = tok.convert_tokens_to_ids(bos)
    config = getattr(transformers, f"{prefix}Config")(vision_config=vision, text_config=text, scale_factor=2,
                                                       image_token_id=tok.convert_tokens_to_ids("<image>"))
    return config, processor, getattr(transformers, f"{prefix}ForConditionalGeneration")


def tiny_idefics3() -> tuple[Any, Any, type]:
    return _tiny("idefics3")


def tiny_smolvlm() -> tuple[Any, Any, type]:
    return _tiny("smolvlm")


IDEFICS3 = register_family(Family(
    name="idefics3", title="Idefics3 / SmolVLM", model_types=("idefics3",),
    model_class="Idefics3ForConditionalGeneration", processor_class="Idefics3Processor",
    adapter=Idefics3Adapter("idefics3", IDEFICS3_PATHS), tiny_name="tiny-idefics3", build_tiny=tiny_idefics3,
    checkpoints=(Checkpoint("idefics3", "HuggingFaceM4/Idefics3-8B-Llama3", "Idefics3-8B (Llama 3)"),
                 Checkpoint("smolvlm", "HuggingFaceTB/SmolVLM-Instruct", "SmolVLM-Instruct 2B (an Idefics3 model)")),
    notes="image splitting: one (side, side) grid per sub-image (crops, then the global image)",
    placeholders=IDEFICS3_PLACEHOLDERS))
SMOLVLM = register_family(Family(
    name="smolvlm", title="SmolVLM2", model_types=("smolvlm",), model_class="SmolVLMForConditionalGeneration",
    processor_class=SmolVLMImageOnlyProcessor, adapter=Idefics3Adapter("smolvlm", IDEFICS3_PATHS, nested_images=True),
    tiny_name="tiny-smolvlm", build_tiny=tiny_smolvlm,
    checkpoints=(Checkpoint("smolvlm2", "HuggingFaceTB/SmolVLM2-2.2B-Instruct", "SmolVLM2-2.2B-Instruct"),),
    notes="as Idefics3",
    placeholders=IDEFICS3_PLACEHOLDERS))
