"""One spec reader for `validate`, `prepare`, `train` and `job`: JSON as JSON, YAML as
YAML, exponents as numbers, NaN and Infinity refused as JSON refuses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltx_contract.outcomes import ExitCode
from ltx_contract.spec import SpecError, parse_spec
from ltx_trainer.cli import main
from ltx_trainer.spec_file import read_spec, spec_from_text

URL = "s3://datasets/clips.zip"
#: every number field of the spec written with an exponent, and what it means
EXPONENTS = {
    "rank": ("1.6e1", 16),
    "numberOfSteps": ("1.2E3", 1200),
    "learningRate": ("2e-4", 0.0002),
    "conditioningFrames": ("1.6e+1", 16),
    "numberOfFrames": ("4.9e1", 49),
    "frameRate": ("2.4e1", 24),
    "splitInputDurationThreshold": ("1.5e1", 15.0),
    "validationNumberOfFrames": ("3.3e1", 33),
    "validationFrameRate": ("3e1", 30),
    "stgScale": ("1.5e0", 1.5),
    "gpus": ("2e0", 2),
    "ttlSecondsAfterFinished": ("3.6e3", 3600),
    "activeDeadlineSeconds": ("8.64e4", 86400),
    "backoffLimit": ("5e0", 5),
}
TOLERATION_SECONDS = ("3e2", 300)


def _json_text(snake: bool = False) -> str:
    from ltx_contract.spec import TrainingSpec

    names = {info.alias: name for name, info in TrainingSpec.model_fields.items()}
    fields = [f'"{names[k] if snake else k}": {text}' for k, (text, _) in EXPONENTS.items()]
    toleration = ('"tolerations": [{"key": "gpu", "operator": "Exists", "effect": '
                  f'"NoExecute", "tolerationSeconds": {TOLERATION_SECONDS[0]}}}]')
    return "{" + ", ".join([f'"trainingDataUrl": "{URL}"', *fields, toleration]) + "}"


def _yaml_text() -> str:
    lines = [f"trainingDataUrl: {URL}",
             *(f"{k}: {text}" for k, (text, _) in EXPONENTS.items()),
             "tolerations:", "  - key: gpu", "    operator: Exists", "    effect: NoExecute",
             f"    tolerationSeconds: {TOLERATION_SECONDS[0]}"]
    return "\n".join(lines) + "\n"


EXPECTED = parse_spec({"trainingDataUrl": URL, **{k: v for k, (_, v) in EXPONENTS.items()},
                       "tolerations": [{"key": "gpu", "operator": "Exists",
                                        "effect": "NoExecute",
                                        "tolerationSeconds": TOLERATION_SECONDS[1]}]})


@pytest.mark.parametrize(("name", "text"), [("spec.json", _json_text()),
                                            ("spec.yaml", _yaml_text()),
                                            ("spec.yml", _yaml_text()),
                                            ("spec.txt", _json_text())])
def test_exponents_in_every_number_field_are_numbers(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert read_spec(path) == EXPECTED


def test_a_job_reads_the_same_document_the_same_way(tmp_path):
    assert spec_from_text(_json_text()) == EXPECTED  # --spec-json / LTX_EXTEND_SPEC
    (tmp_path / "spec.json").write_text(_json_text())
    assert read_spec(tmp_path / "spec.json") == spec_from_text(_json_text())
    snake = spec_from_text(_json_text(snake=True))
    assert snake == EXPECTED  # the API's snake_case request body, unchanged


def test_validate_accepts_an_exponent_learning_rate(tmp_path, capsys):
    """The reported case: `"learning_rate": 1e-4` in a JSON request file."""
    path = tmp_path / "request.json"
    path.write_text('{"training_data_url": "s3://b/clips.zip", "learning_rate": 1e-4, '
                    '"number_of_steps": 1e3}')
    assert main(["validate", str(path)]) == ExitCode.SUCCESS
    assert "1000 steps" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "message"), [
    (f'{{"trainingDataUrl": "{URL}", "learningRate": NaN}}',
     "is not valid JSON: NaN is not a number in JSON (JSON has no NaN or Infinity)"),
    (f'{{"trainingDataUrl": "{URL}", "learningRate": Infinity}}',
     "is not valid JSON: Infinity is not a number in JSON"),
    (f'{{"trainingDataUrl": "{URL}", "learningRate": -Infinity}}',
     "is not valid JSON: -Infinity is not a number in JSON"),
    (f'{{"trainingDataUrl": "{URL}", "learningRate": 1e999}}',
     "is not valid JSON: the number 1e999 is out of range"),
    (f'{{"trainingDataUrl": "{URL}", "rank": 16, "rank": 32}}',
     "is not valid JSON: the key 'rank' is given twice"),
    (f'{{"trainingDataUrl": "{URL}", "numberOfSteps": 1.505e2}}',
     "numberOfSteps (150.5) must be a whole number"),
])
def test_json_refuses_what_json_has_no_number_for(tmp_path, text, message):
    path = tmp_path / "spec.json"
    path.write_text(text)
    with pytest.raises(SpecError) as from_file:
        read_spec(path)
    assert any(message in p for p in from_file.value.problems), from_file.value.problems
    with pytest.raises(SpecError) as from_job:
        spec_from_text(text)
    assert any(message in p for p in from_job.value.problems)


@pytest.mark.parametrize(("line", "message"), [
    ("learningRate: .inf", "learningRate (inf) must be a finite number"),
    ("learningRate: .nan", "learningRate (nan) must be a finite number"),
    ("learningRate: '2e-4'", "learningRate ('2e-4') must be a number"),  # quoted: a string
    ("learningRate: 1e6", "learningRate (1000000) must be greater than 0 and at most 0.01"),
])
def test_yaml_reads_yaml_and_the_model_names_what_is_wrong(tmp_path, line, message):
    path = tmp_path / "spec.yaml"
    path.write_text(f"trainingDataUrl: {URL}\n{line}\n")
    with pytest.raises(SpecError) as info:
        read_spec(path)
    assert info.value.problems == [message]


def test_a_yaml_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(f"trainingDataUrl: {URL}\nrank: 16\nrank: 32\n")
    with pytest.raises(SpecError, match="the key 'rank' is given twice"):
        read_spec(path)


def test_a_job_given_nan_fails_as_an_invalid_spec_and_bills_nothing(tmp_path, capsys):
    store, log = tmp_path / "store", tmp_path / "termination-log"
    text = f'{{"trainingDataUrl": "{URL}", "learningRate": NaN}}'
    assert main(["job", "prepare", "--spec-json", text, "--store", str(store), "--run",
                 "ns/name/uid", "--work", str(tmp_path / "work"), "--termination-log",
                 str(log)]) == ExitCode.INVALID_INPUT
    result = json.loads(log.read_text())
    assert (result["reason"], result["billableUnits"]) == ("InvalidSpec", 0)
    assert "NaN is not a number in JSON" in result["message"]
    stored = json.loads(Path(store / "ns/name/uid/result-prepare.json").read_text())
    assert stored["reason"] == "InvalidSpec"
    assert "NaN is not a number" in capsys.readouterr().err


def test_a_job_reads_a_spec_file_given_as_at_path_or_at_file_url(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(_yaml_text())
    store = tmp_path / "store"
    for given in (f"@{path}", f"@{path.as_uri()}"):
        code = main(["job", "train", "--spec-json", given, "--store", str(store), "--run",
                     "ns/n/uid", "--work", str(tmp_path / "w"), "--termination-log",
                     str(tmp_path / "log"), "--progress-port", "0"])
        assert code == ExitCode.INVALID_INPUT  # no base model: the spec itself was read
        assert json.loads((tmp_path / "log").read_text())["reason"] == "NoBaseModel"
