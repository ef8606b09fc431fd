"""The LoRA adapter on an LTX-2 transformer: which modules it adapts for the modalities a
training trains, added through peft. One definition for the trainer, the memory plan and
the tests (the file the adapter is saved to is `lora.py`)."""

from __future__ import annotations

from typing import Any

MODALITIES = ("video", "audio")
#: the scale (alpha / rank) the LoRA is trained and saved at: ComfyUI and Lightricks'
#: ltx-core ignore alpha and apply a LoRA at scale 1 (the official files hold no `.alpha`
#: tensors), so any other scale would make the LoRA act differently there than here
LORA_SCALE = 1.0


def lora_alpha(rank: int) -> int:
    """The one definition of the LoRA's alpha: equal to `rank`, a scale of 1."""
    return rank


def check_lora_scale(transformer: Any) -> None:
    """Refuse an adapter whose layers are scaled otherwise than `LORA_SCALE` (alpha !=
    rank): its file would load at another strength in the tools users have."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in transformer.named_modules():
        if isinstance(module, BaseTunerLayer):
            for adapter, scale in getattr(module, "scaling", {}).items():
                if scale != LORA_SCALE:
                    raise ValueError(
                        f"the LoRA layer {name} (adapter {adapter!r}) is scaled {scale:g}, but "
                        f"LoRA files are applied at scale {LORA_SCALE:g} (alpha = rank) by "
                        "ComfyUI and ltx-core: train it with alpha equal to its rank")


def trained_modalities(with_audio: bool) -> tuple[str, ...]:
    """What a training trains: video always, audio when the spec asks for it."""
    return MODALITIES if with_audio else ("video",)


PROJECTIONS = "(to_q|to_k|to_v|to_out\\.0)"
ATTENTIONS = {
    "video": ("attn1", "attn2"),
    "audio": ("audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"),
}


def lora_targets(modalities: tuple[str, ...]) -> str:
    """peft's target_modules regex: the attention projections of the trained modalities."""
    names = [a for m in modalities for a in ATTENTIONS[m]]
    return rf"transformer_blocks\.\d+\.({'|'.join(names)})\.{PROJECTIONS}"


def add_lora(transformer: Any, rank: int, modalities: tuple[str, ...]) -> None:
    """The adapter, its layers left to take their input as it comes: peft would otherwise
    copy every bf16 activation into the fp32 of the LoRA weights before each LoRA matmul
    (the step's autocast runs those matmuls in bf16 anyway)."""
    from peft import LoraConfig

    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=lora_alpha(rank), init_lora_weights=True,
                                       target_modules=lora_targets(modalities)))
    set_input_casting(transformer, False)


def set_input_casting(transformer: Any, enabled: bool) -> None:
    """Whether the LoRA layers cast their input to their weights' dtype (peft's default)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = enabled
