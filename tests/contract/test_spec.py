"""The spec model: the extend-suffix API's parameters, defaults, rules and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ltx_contract.resource import parse_resource
from ltx_contract.rules import snap_frames
from ltx_contract.spec import (
    DEFAULT_NEGATIVE_PROMPT,
    SpecError,
    TrainingSpec,
    frame_size,
    parse_spec,
)

ROOT = Path(__file__).resolve().parents[2]
URL = "https://example.com/clips.zip"


def problems(**fields) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec({"trainingDataUrl": URL, **fields})
    return info.value.problems


def test_reference_defaults():
    spec = parse_spec({"trainingDataUrl": URL})
    assert spec.model_dump() == {
        "training_data_url": URL,
        "trigger_phrase": "",
        "rank": 32,
        "number_of_steps": 2000,
        "learning_rate": 0.0002,
        "conditioning_frames": 8,
        "number_of_frames": 89,
        "frame_rate": 24,
        "resolution": "medium",
        "aspect_ratio": "1:1",
        "auto_scale_input": False,
        "split_input_into_scenes": True,
        "split_input_duration_threshold": 30.0,
        "with_audio": False,
        "audio_normalize": True,
        "audio_preserve_pitch": True,
        "validation": [],
        "validation_negative_prompt": DEFAULT_NEGATIVE_PROMPT,
        "validation_number_of_frames": 89,
        "validation_frame_rate": 24,
        "validation_resolution": "high",
        "validation_aspect_ratio": "1:1",
        "stg_scale": 1.0,
        "debug_dataset": False,
        "held_out_share": 0.1,
        "gpus": None, "nodes": 1,
        "gpu_resource_name": None,
        "node_selector": {},
        "tolerations": [],
        "priority_class_name": None,
        "suspend": False,
        "ttl_seconds_after_finished": None,
        "active_deadline_seconds": None,
        "backoff_limit": 3,
        "model": None,
        "output": None,
    }
    assert spec.suffix_latent_frames == 1


def test_reference_json_example_parses_unchanged_and_means_the_same():
    snake = json.loads((ROOT / "examples/extend-suffix-request.json").read_text())
    camel = {
        "trainingDataUrl": "https://example.com/clips.zip",
        "triggerPhrase": "",
        "rank": 32,
        "numberOfSteps": 2000,
        "learningRate": 0.0002,
        "conditioningFrames": 8,
        "numberOfFrames": 89,
        "frameRate": 24,
        "resolution": "medium",
        "aspectRatio": "1:1",
        "withAudio": False,
        "validation": [
            {"prompt": "a person approaching a door", "videoUrl": "https://example.com/closing.mp4"}
        ],
    }
    assert parse_spec(snake) == parse_spec(camel)
    assert parse_spec(snake).validation[0].video_url == "https://example.com/closing.mp4"


@pytest.mark.parametrize(
    ("requested", "used"),
    [(9, 9), (10, 9), (16, 9), (17, 17), (88, 81), (89, 89), (90, 89), (96, 89), (97, 97),
     (120, 113), (121, 121)],
)
def test_frame_counts_snap_down_to_8k_plus_1(requested, used):
    assert snap_frames(requested) == used
    spec = parse_spec({"trainingDataUrl": URL, "numberOfFrames": requested,
                       "validationNumberOfFrames": requested})
    assert spec.number_of_frames == used
    assert spec.validation_number_of_frames == used
    expected = {} if requested == used else {
        "numberOfFrames": (requested, used), "validationNumberOfFrames": (requested, used)}
    assert spec.snapped() == expected


def test_snapped_value_is_what_the_jobs_receive():
    spec = parse_spec({"trainingDataUrl": URL, "numberOfFrames": 96})
    sent = json.loads(spec.to_json())
    assert sent["numberOfFrames"] == 89
    assert parse_spec(sent).model_dump() == spec.model_dump()


@pytest.mark.parametrize(
    ("resolution", "aspect", "size"),
    [("low", "16:9", (512, 288)), ("low", "1:1", (512, 512)), ("low", "9:16", (288, 512)),
     ("medium", "16:9", (768, 448)), ("medium", "1:1", (768, 768)),
     ("medium", "9:16", (448, 768)), ("high", "16:9", (960, 544)),
     ("high", "1:1", (960, 960)), ("high", "9:16", (544, 960))],
)
def test_frame_size_table(resolution, aspect, size):
    assert frame_size(resolution, aspect) == size
    spec = parse_spec({"trainingDataUrl": URL, "resolution": resolution, "aspectRatio": aspect,
                       "validationResolution": resolution, "validationAspectRatio": aspect})
    assert spec.frame_size == spec.validation_frame_size == size


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"conditioningFrames": 12},
         "conditioningFrames (12) must be a multiple of 8 (8, 16, 24, …)"),
        ({"conditioningFrames": 0}, "conditioningFrames (0) must be between 8 and 121"),
        ({"conditioningFrames": 128}, "conditioningFrames (128) must be between 8 and 121"),
        ({"conditioningFrames": 96, "numberOfFrames": 96, "validationNumberOfFrames": 121},
         "conditioningFrames (96) must be smaller than numberOfFrames (89, snapped down from 96): "
         "the suffix may not cover the whole clip, there must be a lead-in left to generate"),
        ({"conditioningFrames": 88, "numberOfFrames": 81},
         "conditioningFrames (88) must be smaller than numberOfFrames (81): "
         "the suffix may not cover the whole clip, there must be a lead-in left to generate"),
        ({"conditioningFrames": 24, "validationNumberOfFrames": 17},
         "conditioningFrames (24) must be smaller than validationNumberOfFrames (17): "
         "the suffix may not cover the whole clip, there must be a lead-in left to generate"),
        ({"numberOfFrames": 8}, "numberOfFrames (8) must be between 9 and 121"),
        ({"numberOfFrames": 122}, "numberOfFrames (122) must be between 9 and 121"),
        ({"validationNumberOfFrames": 130},
         "validationNumberOfFrames (130) must be between 9 and 121"),
        ({"rank": 12}, "rank (12) must be one of 8, 16, 32, 64 or 128"),
        ({"numberOfSteps": 99}, "numberOfSteps (99) must be between 100 and 20000"),
        ({"numberOfSteps": 20001}, "numberOfSteps (20001) must be between 100 and 20000"),
        ({"learningRate": 0}, "learningRate (0) must be greater than 0 and at most 0.01"),
        ({"learningRate": -0.1}, "learningRate (-0.1) must be greater than 0 and at most 0.01"),
        ({"learningRate": 0.05}, "learningRate (0.05) must be greater than 0 and at most 0.01"),
        ({"learningRate": 1e6},
         "learningRate (1000000.0) must be greater than 0 and at most 0.01"),
        ({"learningRate": float("inf")}, "learningRate (inf) must be a finite number"),
        ({"learningRate": float("nan")}, "learningRate (nan) must be a finite number"),
        ({"frameRate": 7}, "frameRate (7) must be between 8 and 60"),
        ({"validationFrameRate": 61}, "validationFrameRate (61) must be between 8 and 60"),
        ({"resolution": "ultra"}, "resolution ('ultra') must be one of low, medium or high"),
        ({"validationResolution": "4k"},
         "validationResolution ('4k') must be one of low, medium or high"),
        ({"aspectRatio": "4:3"}, "aspectRatio ('4:3') must be one of 16:9, 1:1 or 9:16"),
        ({"splitInputDurationThreshold": 0.5},
         "splitInputDurationThreshold (0.5) must be between 1.0 and 60.0"),
        ({"splitInputDurationThreshold": 61},
         "splitInputDurationThreshold (61) must be between 1.0 and 60.0"),
        ({"stgScale": 3.5}, "stgScale (3.5) must be between 0.0 and 3.0"),
        ({"stgScale": -0.5}, "stgScale (-0.5) must be between 0.0 and 3.0"),
        ({"validation": [{"videoUrl": "https://a/1.mp4"}] * 3},
         "validation has 3 entries; at most 2 are allowed"),
        ({"validation": [{"prompt": "p"}]}, "validation[0].videoUrl is required"),
        ({"validation": [{"videoUrl": "gs://a/1.mp4"}]},
         "validation[0]: videoUrl must be an http://, https://, s3:// or file:// URL"),
        ({"trainingDataUrl": "ftp://example.com/a.zip"},
         "trainingDataUrl must be an http://, https://, s3:// or file:// URL"),
        ({"withAudio": "true"}, "withAudio ('true') must be true or false"),
        ({"numberOfSteps": "2000"}, "numberOfSteps ('2000') must be a whole number"),
        ({"conditoningFrames": 16},
         "conditoningFrames is not a known field (did you mean conditioningFrames?)"),
        ({"model": {"claimName": "models", "url": "s3://m/ltx"}},
         "model: exactly one of claimName (a PVC) or url (a store prefix) must be set"),
        ({"model": {"url": "https://hub/ltx"}}, "model: url must be an s3:// or file:// URL"),
        ({"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]},
         "tolerations[0]: a toleration with operator Exists must not set a value"),
        ({"gpus": 0}, "gpus (0) must be between 1 and 8"),
        ({"backoffLimit": -1}, "backoffLimit (-1) must be between 0 and 100"),
        ({"ttlSecondsAfterFinished": -5}, "ttlSecondsAfterFinished (-5) must be at least 0"),
    ],
)
def test_every_rule_has_a_plain_words_message(fields, message):
    assert problems(**fields) == [message]


def test_missing_training_data_url():
    with pytest.raises(SpecError) as info:
        parse_spec({"rank": 16})
    assert info.value.problems == ["trainingDataUrl is required"]


def test_every_broken_cross_field_rule_is_reported():
    found = problems(conditioningFrames=20, numberOfFrames=17, validationNumberOfFrames=9)
    assert found[0] == "conditioningFrames (20) must be a multiple of 8 (8, 16, 24, …)"
    assert [p.split(":")[0] for p in found[1:]] == [
        "conditioningFrames (20) must be smaller than numberOfFrames (17)",
        "conditioningFrames (20) must be smaller than validationNumberOfFrames (9)",
    ]


def test_suffix_rule_uses_the_snapped_count():
    # 96 ≥ 88 but 96 snaps to 89 > 88: valid; 90 snaps to 89 < 96: invalid.
    assert parse_spec({"trainingDataUrl": URL, "conditioningFrames": 88,
                       "numberOfFrames": 96}).number_of_frames == 89
    assert problems(conditioningFrames=96, numberOfFrames=97, validationNumberOfFrames=96)


def test_spec_is_immutable_once_parsed():
    spec = parse_spec({"trainingDataUrl": URL})
    with pytest.raises(ValidationError, match="frozen"):
        spec.rank = 64


def test_resource_parsing_checks_identity_and_name_length():
    ok = {"apiVersion": "ltx-training.io/v1alpha1", "kind": "LtxExtendTraining",
          "metadata": {"name": "a"}, "spec": {"trainingDataUrl": URL}}
    name, spec = parse_resource(ok)
    assert name == "a" and isinstance(spec, TrainingSpec)
    bad = {**ok, "apiVersion": "v1", "metadata": {"name": "n" * 56},
           "spec": {"trainingDataUrl": URL, "rank": 7}}
    with pytest.raises(SpecError) as info:
        parse_resource(bad)
    assert info.value.problems == [
        "apiVersion ('v1') must be 'ltx-training.io/v1alpha1'",
        f"metadata.name ('{'n' * 56}') must be at most 55 characters so that its Job names "
        "fit in 63",
        "spec.rank (7) must be one of 8, 16, 32, 64 or 128",
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"learning_rate": 0.05}, "learning_rate (0.05) must be greater than 0 and at most 0.01"),
        ({"conditioning_frames": 12},
         "conditioning_frames (12) must be a multiple of 8 (8, 16, 24, …)"),
        ({"conditioning_frames": 96, "number_of_frames": 96, "validation_number_of_frames": 121},
         "conditioning_frames (96) must be smaller than number_of_frames (89, snapped down from "
         "96): the suffix may not cover the whole clip, there must be a lead-in left to generate"),
        ({"validation": [{"prompt": "p"}]}, "validation[0].video_url is required"),
        ({"validation": [{"video_url": "gs://a/1.mp4"}]},
         "validation[0]: video_url must be an http://, https://, s3:// or file:// URL"),
        ({"number_of_step": 200}, "number_of_step is not a known field (did you mean "
         "number_of_steps?)"),
        ({"model": {"claim_name": "models", "url": "s3://m/ltx"}},
         "model: exactly one of claim_name (a PVC) or url (a store prefix) must be set"),
    ],
)
def test_a_snake_case_request_hears_its_own_field_names(fields, message):
    with pytest.raises(SpecError) as info:
        parse_spec({"training_data_url": URL, **fields})
    assert info.value.problems == [message]


def test_a_snake_case_request_without_its_url_is_told_the_snake_case_name():
    with pytest.raises(SpecError) as info:
        parse_spec({"number_of_steps": 200, "trigger_phrase": "x"})
    assert info.value.problems == ["training_data_url is required"]
