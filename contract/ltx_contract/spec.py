"""The job spec: the contract between the resource, the operator and the trainer.

Every input parameter of the extend-suffix API with the same defaults, ranges and
rules, plus the Kubernetes-side fields. It accepts the CRD's camelCase and the
API's snake_case request JSON. Imports nothing heavy: the operator imports it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from . import rules
from .rules import Rule, snap_frames

Resolution = Literal["low", "medium", "high"]
AspectRatio = Literal["16:9", "1:1", "9:16"]
Rank = Literal[8, 16, 32, 64, 128]

#: (width, height) in pixels for each resolution and aspect ratio (the API's table).
FRAME_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("low", "16:9"): (512, 288),
    ("low", "1:1"): (512, 512),
    ("low", "9:16"): (288, 512),
    ("medium", "16:9"): (768, 448),
    ("medium", "1:1"): (768, 768),
    ("medium", "9:16"): (448, 768),
    ("high", "16:9"): (960, 544),
    ("high", "1:1"): (960, 960),
    ("high", "9:16"): (544, 960),
}

DEFAULT_NEGATIVE_PROMPT = (
    "worst quality, low quality, blurry, out of focus, jittery, shaky, distorted, "
    "deformed, inconsistent motion, flicker, static frame, watermark, text, subtitles, "
    "compression artifacts"
)

MAX_URL_LENGTH = 4096
MAX_TEXT_LENGTH = 4000
MAX_VALIDATION_SAMPLES = 2
#: 50× the default: LoRA learning rates above this diverge rather than learn faster.
MAX_LEARNING_RATE = 0.01
MAX_NODES = 16
#: Fewer training clips than this are all trained on: the validation loss is then computed
#: on the training windows (holding one out of two would halve what the LoRA learns from).
MIN_CLIPS_TO_HOLD_OUT = 3
#: The frame-count fields that the model snaps down to 8k+1.
SNAPPED_FRAME_FIELDS = ("numberOfFrames", "validationNumberOfFrames")


def frame_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """Pixel (width, height) of a resolution bucket, e.g. ("medium", "9:16") → (448, 768)."""
    return FRAME_SIZES[(resolution, aspect_ratio)]


class SpecModel(BaseModel):
    """Base of every spec part: camelCase or snake_case in, unknown keys refused,
    and the part's cross-field `__rules__` checked on the stored (camelCase) form."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
        strict=True,  # as the API server: "32" is not an integer, "true" not a boolean
    )
    __rules__: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _check_rules(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        stored = model.stored_form()
        problems = [p for rule in cls.__rules__ if (p := rule.violation(stored))]
        if problems:
            raise PydanticCustomError(
                "spec_rule", "{message}", {"message": "; ".join(problems), "problems": problems}
            )
        model._after_rules()
        return model

    def _after_rules(self) -> None:
        """Normalisation that must happen after the rules have seen the stored form."""

    def stored_form(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, unset optionals absent."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _text(description: str, default: str = "", max_length: int = MAX_TEXT_LENGTH) -> Any:
    return Field(default, max_length=max_length, description=description)


class ValidationSample(SpecModel):
    """A closing clip to extend backward for the validation previews."""

    __rules__ = (rules.VALIDATION_VIDEO_URL,)

    prompt: str = _text("The text prompt describing the lead-in to generate.")
    video_url: str = Field(
        max_length=MAX_URL_LENGTH,
        description=(
            "A video to extend backward. Its last conditioningFrames frames are used as "
            "the suffix; it must be at least conditioningFrames long at "
            "validationFrameRate."
        ),
    )


class Toleration(SpecModel):
    """A Kubernetes toleration for the training pods."""

    __rules__ = (rules.TOLERATION_EXISTS_HAS_NO_VALUE,)

    key: str | None = Field(None, max_length=317, description="The taint key to tolerate.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: str | None = Field(None, max_length=63, description="The taint value (Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="The taint effect to tolerate; unset tolerates all effects."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, description="How long a NoExecute taint is tolerated before eviction."
    )


class ModelSource(SpecModel):
    """Where the base model (LTX-2.3 or LTX-2.5) comes from: a diffusers-format model
    folder; LTX-2.3's official single-file checkpoint (`ltx-2.3-22b-dev.safetensors`) with
    its Gemma-3 folder; or LTX-2.5's split pack (its transformer file, with the text encoder,
    video VAE and audio VAE files beside it under their published names, or named)."""

    __rules__ = (rules.MODEL_SOURCE_EXACTLY_ONE, rules.MODEL_URL, rules.MODEL_TEXT_ENCODER,
                 rules.MODEL_TEXT_ENCODER_WITH_CHECKPOINT, rules.MODEL_LTX23_TEXT_ENCODER,
                 rules.MODEL_VIDEO_VAE, rules.MODEL_AUDIO_VAE)

    claim_name: str | None = Field(
        None, max_length=253,
        description="A PersistentVolumeClaim holding the model folder or checkpoint(s).",
    )
    sub_path: str | None = Field(
        None, max_length=1024,
        description="The model folder's path inside the claim, or the checkpoint's "
        "(ending in .safetensors; for LTX-2.5, its transformer file).",
    )
    url: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="An s3:// or file:// prefix of the model folder in the artifact store, "
        "or the URL of a checkpoint (ending in .safetensors): LTX-2.3's single file, or "
        "LTX-2.5's transformer file.",
    )
    text_encoder: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="The text encoder of a checkpoint, which holds none: LTX-2.3's Gemma-3 "
        "folder (config, weights, tokenizer; required), or LTX-2.5's text encoder file "
        "(default: gemma4-12b-with-proj-ltx-2.5-bf16.safetensors beside the transformer). "
        "An s3:// or file:// URL, or a path relative to the checkpoint's folder (in the same "
        "store or claim). With a checkpoint only.",
    )
    video_vae: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="LTX-2.5's video VAE file (default: ltx-2.5-video-vae-bf16.safetensors, "
        "with the diffusion decoder, and ltx-2.5-video-vae-conv-bf16.safetensors, with the "
        "convolutional one, beside the transformer). A URL or a relative path, as textEncoder.",
    )
    audio_vae: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description="LTX-2.5's audio VAE file, with the vocoder (default: "
        "ltx-2.5-audio-vae-bf16.safetensors beside the transformer). A URL or a relative "
        "path, as textEncoder.",
    )
    version: Literal[rules.MODEL_VERSIONS] | None = Field(  # type: ignore[valid-type]
        None,
        description="The base model version. Unset: read from the model's files; set: the "
        "files must be of it (a training whose files are another version is refused). A "
        "LoRA works only with the version it was trained on.",
    )


class OutputLocation(SpecModel):
    """Where this training's dataset, checkpoints and outputs are written."""

    __rules__ = (rules.OUTPUT_URL,)

    url: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        description=(
            "An s3:// or file:// prefix; files go under <url>/<namespace>/<name>/<uid>/. "
            "Unset uses the operator's artifact store."
        ),
    )
    secret_name: str | None = Field(
        None,
        max_length=253,
        description=(
            "A Secret in the resource's namespace with the store credentials "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Unset uses the operator's."
        ),
    )


class TrainingSpec(SpecModel):
    """Everything one LtxExtendTraining asks for."""

    __rules__ = (
        rules.TRAINING_DATA_URL,
        rules.CONDITIONING_FRAMES_MULTIPLE_OF_8,
        rules.SUFFIX_SHORTER_THAN_TRAINING_CLIP,
        rules.SUFFIX_SHORTER_THAN_VALIDATION_CLIP,
    )
    _requested_frames: dict[str, int] = PrivateAttr(default_factory=dict)

    # Dataset
    training_data_url: str = Field(
        max_length=MAX_URL_LENGTH,
        description=(
            "URL of the .zip archive of videos (.mp4, .mov, .avi, .mkv) with optional "
            "same-named .txt captions: http(s)://, s3:// or file://."
        ),
    )
    trigger_phrase: str = _text(
        "Phrase prepended to captions during training; include it at inference.",
        max_length=1000,
    )
    # Training
    rank: Rank = Field(32, description="LoRA capacity: 8, 16, 32, 64 or 128.")
    number_of_steps: int = Field(
        2000, ge=100, le=20000, description="Number of optimization steps (100–20000)."
    )
    learning_rate: float = Field(
        0.0002,
        gt=0,
        le=MAX_LEARNING_RATE,
        allow_inf_nan=False,
        description=(
            f"AdamW step size for the LoRA, greater than 0 and at most {MAX_LEARNING_RATE}. "
            "LoRA trainers use 1e-5 to 1e-3 (2e-4 is typical); above 0.01 each update "
            "outweighs the adapter's own weights and the loss diverges."
        ),
    )
    conditioning_frames: int = Field(
        8,
        ge=8,
        le=121,
        description=(
            "Number of trailing frames kept as the clean suffix the model leads up to. "
            "A multiple of 8 (8, 16, 24, …), smaller than numberOfFrames and "
            "validationNumberOfFrames."
        ),
    )
    # Video
    number_of_frames: int = Field(
        89,
        ge=9,
        le=121,
        description=(
            "Frames per training clip (9–121). Counts that are not 8k+1 are snapped down "
            "to the nearest one (96 → 89); the snapped count is the one used."
        ),
    )
    frame_rate: int = Field(24, ge=8, le=60, description="Target frames per second (8–60).")
    resolution: Resolution = Field(
        "medium", description="Training resolution bucket: low, medium or high."
    )
    aspect_ratio: AspectRatio = Field("1:1", description="Training aspect ratio: 16:9, 1:1, 9:16.")
    auto_scale_input: bool = Field(
        False,
        description=(
            "Fit videos to the target frame count and frame rate; when false, clips "
            "shorter than numberOfFrames are skipped."
        ),
    )
    split_input_into_scenes: bool = Field(
        True, description="Split long clips into scenes before training."
    )
    split_input_duration_threshold: float = Field(
        30.0,
        ge=1.0,
        le=60.0,
        description="Duration in seconds above which a clip is split into scenes (1–60).",
    )
    # Audio
    with_audio: bool = Field(
        False,
        description=(
            "Jointly extend audio and video from the same closing window. Every training "
            "and validation clip must then have an audio track; false gives silent output."
        ),
    )
    audio_normalize: bool = Field(
        True, description="Peak-normalize audio (used when withAudio is true)."
    )
    audio_preserve_pitch: bool = Field(
        True, description="Preserve pitch when fitting audio to the video's duration."
    )
    # Validation
    validation: list[ValidationSample] = Field(
        default_factory=list,
        max_length=MAX_VALIDATION_SAMPLES,
        description="Validation samples (at most 2), each a prompt and a closing clip.",
    )
    validation_negative_prompt: str = _text(
        "Negative prompt for the validation previews.", default=DEFAULT_NEGATIVE_PROMPT
    )
    validation_number_of_frames: int = Field(
        89,
        ge=9,
        le=121,
        description=(
            "Frames per validation preview (9–121), snapped down to 8k+1 like "
            "numberOfFrames; must be larger than conditioningFrames."
        ),
    )
    validation_frame_rate: int = Field(
        24, ge=8, le=60, description="Validation frames per second (8–60)."
    )
    validation_resolution: Resolution = Field(
        "high", description="Validation resolution bucket: low, medium or high."
    )
    validation_aspect_ratio: AspectRatio = Field(
        "1:1", description="Validation aspect ratio: 16:9, 1:1 or 9:16."
    )
    stg_scale: float = Field(
        1.0, ge=0.0, le=3.0, description="Spatio-temporal guidance scale (0–3); 0 turns it off."
    )
    debug_dataset: bool = Field(
        False, description="Also return an archive of the preprocessed data for inspection."
    )
    held_out_share: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        allow_inf_nan=False,
        description=(
            "Share of the training clips (0–0.5) held out of training to compute a validation "
            "loss that rises when the LoRA overfits: whole clips, chosen by name, at least one, "
            "never the only training clip. 0 turns it off; with it off, or fewer than "
            f"{MIN_CLIPS_TO_HOLD_OUT} clips, the validation loss is computed on the training "
            "windows."
        ),
    )

    # Kubernetes side
    gpus: int | None = Field(None, ge=1, le=8, description="GPUs requested by the train Job "
                             "(1–8); unset uses the operator's default (1 unless configured).")
    nodes: int = Field(
        1, ge=1, le=MAX_NODES,
        description=f"Nodes the train Job runs on (1–{MAX_NODES}), each with `gpus` GPUs: the "
        "training has nodes × gpus ranks (data parallel, one sample per rank and step). More "
        "than one node is an Indexed Job plus a headless Service, admitted as one gang.",
    )
    gpu_resource_name: str | None = Field(
        None,
        max_length=253,
        description="Extended resource name of the GPU (e.g. nvidia.com/gpu); unset uses the "
        "operator's default.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Node labels the train Job's pod must match.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations for the train Job's pod."
    )
    priority_class_name: str | None = Field(
        None, max_length=253, description="PriorityClass of the train Job's pod."
    )
    suspend: bool = Field(
        False, description="Suspend the training: its active Job is suspended until unset."
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description="Delete the resource (and its Jobs) this many seconds after it finishes.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Wall-clock limit of the train Job in seconds."
    )
    backoff_limit: int = Field(
        3,
        ge=0,
        le=100,
        description=(
            "Retries of a failed train pod (on many nodes: restarts of the whole gang) before "
            "the training fails; preemption, eviction and drains do not count."
        ),
    )
    model: ModelSource | None = Field(
        None, description="The base model, LTX-2.3 or LTX-2.5 (a model folder, or its "
        "checkpoint files); unset uses the operator's default."
    )
    output: OutputLocation | None = Field(
        None, description="Where artifacts are written; unset uses the operator's store."
    )

    def _after_rules(self) -> None:
        # The API server stores the requested counts; every layer uses the snapped ones.
        for alias in SNAPPED_FRAME_FIELDS:
            name = _field_name(alias)
            requested = getattr(self, name)
            if snap_frames(requested) != requested:
                self._requested_frames[alias] = requested
                self.__dict__[name] = snap_frames(requested)

    def snapped(self) -> dict[str, tuple[int, int]]:
        """Frame counts that were snapped: {field: (requested, used)}."""
        return {
            alias: (requested, getattr(self, _field_name(alias)))
            for alias, requested in self._requested_frames.items()
        }

    @property
    def frame_size(self) -> tuple[int, int]:
        return frame_size(self.resolution, self.aspect_ratio)

    @property
    def validation_frame_size(self) -> tuple[int, int]:
        return frame_size(self.validation_resolution, self.validation_aspect_ratio)

    @property
    def suffix_latent_frames(self) -> int:
        """Latent frames of the clean suffix at the end of the sequence."""
        return self.conditioning_frames // rules.TEMPORAL_COMPRESSION

    def to_json(self) -> str:
        """The spec as the Jobs receive it (camelCase, snapped counts)."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


def _field_name(alias: str) -> str:
    for name, info in TrainingSpec.model_fields.items():
        if info.alias == alias:
            return name
    raise KeyError(alias)


class SpecError(ValueError):
    """An invalid spec; `problems` are plain-words messages naming field, value and rule."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_spec(data: Any) -> TrainingSpec:
    """Validate a spec (camelCase or snake_case mapping) or raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError([f"the spec must be a mapping of fields, not {type(data).__name__}"])
    try:
        return TrainingSpec.model_validate(data)
    except ValidationError as exc:
        from .errors import describe_errors

        raise SpecError(describe_errors(exc, TrainingSpec, data)) from None
