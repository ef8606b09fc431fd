"""How a training runs, beside what it trains (the spec): the trainer's settings.

The spec says what a LoRA learns; these say how the process gets there — checkpoint and
preview cadence, text length, seed, memory and speed levers, the ranks' batch — and
none of them changes what a finished training means. Each field is described where it
is declared; `ltx-extend train` and `ltx-extend job` take every one as a flag of the same
name (`--checkpoint-every` for `checkpoint_every`), and `from_options` reads them from
the parsed command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..codec.text import DEFAULT_TEXT_TOKENS
from .distributed import DEFAULT_COLLECTIVE_TIMEOUT


class TrainSettings(BaseModel):
    """The trainer's settings (`training.trainer.Trainer`); every default is the one a Job
    runs with. Checked where they meet the model (`trainer._check_settings`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(42, description="Seeds the LoRA's initial weights, the sample order, "
                      "the noise and the previews: the same seed trains the same LoRA.")
    checkpoint_every: int = Field(250, description="Steps between checkpoints (and "
                                  "the last step): where a preempted or crashed run resumes.")
    keep_checkpoints: int = Field(2, description="Checkpoints kept in the work folder, "
                                  "the newest ones.")
    max_grad_norm: float = Field(1.0, description="The gradients' norm is clipped to this.")
    weight_decay: float = Field(0.0, description="The optimizer's weight decay on the LoRA "
                                "weights.")
    warmup_steps: int = Field(0, description="Warm-up steps of the learning-rate schedule "
                              "(`schedule.LinearDecay`): the rate rises to the spec's, then "
                              "decays linearly.")
    max_sequence_length: int = Field(DEFAULT_TEXT_TOKENS, description="Text tokens a "
                                     "prompt is padded or cut to (Gemma's features).")
    log_every: int = Field(25, description="Steps between progress lines in the log, where "
                           "no progress bar is shown.")
    preview_every: int = Field(0, description="Steps between validation reels rendered "
                               "during training; 0: only the final reel.")
    validation_every: int = Field(0, description="Steps between validation losses "
                                  "(`validation.py`); 0: at every checkpoint. Always at the "
                                  "last step too.")
    preview_steps: int = Field(30, description="Denoising steps of each preview.")
    checkpointed_blocks: int | None = Field(None, description="Transformer blocks whose "
                                            "activations are recomputed in the backward pass, "
                                            "the first ones; None: on a GPU the fewest whose "
                                            "planned peak fits its memory, on a CPU none.")
    attention_backend: str = Field("auto", description="The SDPA kernels "
                                   "(`model.forward.ATTENTION_BACKENDS`); auto: cuDNN, then "
                                   "flash, then memory-efficient on a GPU.")
    compile_backend: str | None = Field(None, description="torch.compile the repeated "
                                        "transformer blocks with this backend (\"inductor\"); "
                                        "None: not compiled.")
    low_memory: bool = Field(False, description="int8 frozen block weights and the 8-bit "
                             "AdamW (on CUDA): the 22B model on a 48 GB card.")
    accumulate: int = Field(1, description="Samples each rank trains per step, their "
                            "gradients summed, then averaged with the other ranks': the "
                            "global batch is ranks × accumulate.")
    shard_base: bool = Field(False, description="Shard the frozen base over the node's ranks "
                             "with FSDP2 (`sharding.py`) instead of a whole copy per rank.")
    collective_timeout: float = Field(DEFAULT_COLLECTIVE_TIMEOUT, description="Seconds "
                                      "a collective waits for a peer before the step fails.")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], **overrides: Any) -> TrainSettings:
        """The settings a parsed command line gives (`vars(args)`): each field whose option
        was given, the defaults for the rest; `overrides` on top."""
        given = {name: options[name] for name in cls.model_fields
                 if options.get(name) is not None}
        return cls(**{**given, **overrides})
