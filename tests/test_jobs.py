"""The Job builder: what each stage's Job asks the cluster for."""

from __future__ import annotations

from ltx_operator.jobs import build_job
from ltx_operator.settings import OperatorSettings
from ltx_trainer.spec import parse_spec

BODY = {"metadata": {"name": "door", "namespace": "team", "uid": "u-1",
                     "labels": {"kueue.x-k8s.io/queue-name": "gpus"}}}
SETTINGS = OperatorSettings(model_claim_name="models", model_sub_path="ltx-2.3",
                            store_url="s3://runs", store_secret="store-creds")


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_the_model_volume_or_the_model_url():
    job = build_job("train", BODY, parse_spec({"trainingDataUrl": "s3://d/c.zip"}), SETTINGS)
    assert container(job)["args"][-2:] == ["--model", "/models/ltx-2.3"]
    assert volumes(job)["model"]["persistentVolumeClaim"] == {
        "claimName": "models", "readOnly": True}
    from_store = parse_spec({"trainingDataUrl": "s3://d/c.zip",
                             "model": {"url": "s3://models/ltx-2.3"}})
    job = build_job("train", BODY, from_store, SETTINGS)
    assert container(job)["args"][-2:] == ["--model", "s3://models/ltx-2.3"]
    assert set(volumes(job)) == {"work"}


def volumes(job: dict) -> dict[str, dict]:
    return {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}


def test_every_pod_works_in_its_own_scratch_volume_with_the_platform_flags():
    settings = SETTINGS.model_copy(update={"trainer_args": ["--checkpoint-every", "50"]})
    for stage in ("prepare", "train"):
        job = build_job(stage, BODY, parse_spec({"trainingDataUrl": "s3://d/c.zip"}), settings)
        args = container(job)["args"]
        assert args[args.index("--work") + 1] == "/work"
        assert args[args.index("--checkpoint-every") + 1] == "50"
        assert volumes(job)["work"] == {"name": "work", "emptyDir": {}}
        assert {"name": "work", "mountPath": "/work"} in container(job)["volumeMounts"]


def test_trainer_flags_come_from_one_shell_quoted_variable():
    settings = OperatorSettings.from_env({"LTX_OPERATOR_TRAINER_ARGS":
                                          "--preview-steps 4 --seed '7'"})
    assert settings.trainer_args == ["--preview-steps", "4", "--seed", "7"]


def test_store_and_credentials_follow_the_spec_or_the_operator():
    spec = parse_spec({"trainingDataUrl": "s3://d/c.zip",
                       "output": {"url": "s3://team-bucket/runs", "secretName": "team-creds"}})
    job = build_job("prepare", BODY, spec, SETTINGS)
    env = {e["name"]: e["value"] for e in container(job)["env"]}
    assert env["LTX_EXTEND_STORE"] == "s3://team-bucket/runs"
    assert env["LTX_EXTEND_RUN"] == "team/door/u-1"
    assert container(job)["envFrom"] == [{"secretRef": {"name": "team-creds"}}]
    default = build_job("prepare", BODY, parse_spec({"trainingDataUrl": "s3://d/c.zip"}),
                        SETTINGS)
    assert container(default)["envFrom"] == [{"secretRef": {"name": "store-creds"}}]


def test_prepare_asks_no_gpu_and_train_asks_the_spec_gpus():
    spec = parse_spec({"trainingDataUrl": "s3://d/c.zip", "gpus": 4,
                       "gpuResourceName": "amd.com/gpu", "activeDeadlineSeconds": 7200,
                       "backoffLimit": 5, "suspend": True})
    prepare = build_job("prepare", BODY, spec, SETTINGS)
    assert "limits" not in container(prepare)["resources"]
    train = build_job("train", BODY, spec, SETTINGS)
    assert container(train)["resources"]["limits"] == {"amd.com/gpu": "4"}
    assert (train["spec"]["backoffLimit"], train["spec"]["activeDeadlineSeconds"],
            train["spec"]["suspend"]) == (5, 7200, True)
    assert train["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
    assert train["spec"]["template"]["metadata"]["labels"]["ltx-training.io/stage"] == "train"
