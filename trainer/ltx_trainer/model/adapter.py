"""The LoRA adapter on an LTX-2 transformer: which modules it adapts for the modalities a
training trains, added through peft. One definition for the trainer, the memory plan and
the tests (the file the adapter is saved to is `lora.py`)."""

from __future__ import annotations

from typing import Any

MODALITIES = ("video", "audio")


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

    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                                       target_modules=lora_targets(modalities)))
    set_input_casting(transformer, False)


def set_input_casting(transformer: Any, enabled: bool) -> None:
    """Whether the LoRA layers cast their input to their weights' dtype (peft's default)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = enabled
