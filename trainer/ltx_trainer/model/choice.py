"""Which base model a run uses: the one decision every command makes the same way.

What the command line names (`--model`, `--text-encoder`, `--video-vae`, `--audio-vae`;
for a Job, the operator's mount of the model) comes before the spec's `model`; a part the
spec names by a relative path lies beside the model. Nothing named anywhere means the tiny
random model, in a local run only: a Job refuses it (`NoBaseModel`), and a local run
refuses a spec whose model is a PersistentVolumeClaim, which it cannot mount.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ltx_contract.outcomes import NO_BASE_MODEL, InvalidInput, NoBaseModel

from .source import MODEL_INDEX, STORE_SCHEMES, is_checkpoint, part_location, resolve_model

if TYPE_CHECKING:
    from ltx_contract.spec import ModelSource

    from .loader import Model

Location = Path | str


@dataclass(frozen=True)
class ModelChoice:
    """Where the model and its parts lie (None `source`: the tiny random model) and the
    version the spec asks for."""

    source: Location | None
    text_encoder: Location | None = None
    video_vae: Location | None = None
    audio_vae: Location | None = None
    version: str | None = None

    def resolve(self, cache: Path | None = None) -> Model:
        """The chosen model, checked (`source.resolve_model`)."""
        return resolve_model(self.source, cache, self.text_encoder, video_vae=self.video_vae,
                             audio_vae=self.audio_vae, version=self.version)


def choose_model(spec_model: ModelSource | None, model: Location | None = None,
                 text_encoder: Location | None = None, video_vae: Location | None = None,
                 audio_vae: Location | None = None, *, local: bool = False) -> ModelChoice:
    """The model named on the command line (`model` and its parts) before the spec's
    (`spec_model`); `local`: a local run, where nothing named means the tiny model and a
    `--model` that is not a URL or a checkpoint must be a model folder already."""
    if local and model and not str(model).startswith(STORE_SCHEMES) and not is_checkpoint(
            model) and not (Path(model) / MODEL_INDEX).is_file():
        raise InvalidInput(f"--model {model} is not a diffusers model folder (no {MODEL_INDEX})")
    source = model or (spec_model.url if spec_model else None)
    if source is None and not local:
        raise NoBaseModel(NO_BASE_MODEL)  # a Job never trains the tiny random model
    if source is None and spec_model is not None and spec_model.claim_name:
        raise InvalidInput(f"spec.model.claimName ({spec_model.claim_name}) names a "
                           "PersistentVolumeClaim, which a local run cannot mount: give the "
                           "model folder with --model DIR")

    def part(given: Location | None, name: str) -> Location | None:
        return given or part_location(getattr(spec_model, name) if spec_model else None,
                                      source)

    return ModelChoice(source, part(text_encoder, "text_encoder"), part(video_vae, "video_vae"),
                       part(audio_vae, "audio_vae"),
                       spec_model.version if spec_model else None)
