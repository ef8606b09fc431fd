"""The Job builder: what each stage's Job asks the cluster for."""

from __future__ import annotations

from ltx_contract.spec import parse_spec
from ltx_operator.jobs import build_job
from ltx_operator.settings import OperatorSettings

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
    assert set(volumes(job)) == {"work", "shm"}  # no model volume
    from_platform = SETTINGS.model_copy(update={"model_claim_name": None,
                                                "model_url": "s3://models/ltx-2.3"})
    job = build_job("train", BODY, parse_spec({"trainingDataUrl": "s3://d/c.zip"}),
                    from_platform)
    assert container(job)["args"][-2:] == ["--model", "s3://models/ltx-2.3"]


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
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"] == {"runAsNonRoot": True,
                                          "seccompProfile": {"type": "RuntimeDefault"}}
        assert pod["automountServiceAccountToken"] is False  # no API credentials in pods
        assert container(job)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
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


def test_platform_defaults_for_gpus_nodes_and_the_store_endpoint():
    settings = SETTINGS.model_copy(update={
        "gpu_count": 2, "store_endpoint": "http://minio.storage:9000",
        "prepare_node_selector": {"pool": "cpu"},
        "train_node_selector": {"pool": "gpu", "zone": "a"},
        "train_tolerations": [{"key": "gpu", "operator": "Exists"}]})
    spec = parse_spec({"trainingDataUrl": "s3://d/c.zip", "nodeSelector": {"zone": "b"},
                       "tolerations": [{"key": "team", "operator": "Exists"}]})
    prepare = build_job("prepare", BODY, spec, settings)["spec"]["template"]["spec"]
    assert prepare["nodeSelector"] == {"pool": "cpu"} and "tolerations" not in prepare
    train_job = build_job("train", BODY, spec, settings)
    train = train_job["spec"]["template"]["spec"]
    assert train["nodeSelector"] == {"pool": "gpu", "zone": "b"}  # the spec wins
    assert [t["key"] for t in train["tolerations"]] == ["gpu", "team"]
    assert container(train_job)["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    env = {e["name"]: e["value"] for e in container(train_job)["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage:9000"
    asked = build_job("train", BODY, parse_spec({"trainingDataUrl": "s3://d/c.zip", "gpus": 4}),
                      settings)
    assert container(asked)["resources"]["limits"] == {"nvidia.com/gpu": "4"}


def test_node_settings_come_from_json_variables():
    settings = OperatorSettings.from_env({
        "LTX_OPERATOR_TRAIN_NODE_SELECTOR": '{"pool": "gpu"}',
        "LTX_OPERATOR_TRAIN_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
        "LTX_OPERATOR_GPU_COUNT": "2"})
    assert settings.train_node_selector == {"pool": "gpu"} and settings.gpu_count == 2
    assert settings.train_tolerations == [{"key": "gpu", "operator": "Exists"}]


def test_pods_write_only_to_their_volumes_and_carry_the_platform_shape():
    settings = SETTINGS.model_copy(update={
        "trainer_service_account": "trainer", "trainer_image_pull_secrets": ["registry"],
        "trainer_env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
        "trainer_env_from": [{"configMapRef": {"name": "proxy"}}],
        "trainer_volumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "trainer_volume_mounts": [{"name": "ca", "mountPath": "/etc/ssl/corp"}],
        "trainer_pod_labels": {"team": "video"}, "trainer_pod_annotations": {"a": "b"}})
    body = {"metadata": {**BODY["metadata"], "labels": {
        "kueue.x-k8s.io/queue-name": "gpus", "kueue.x-k8s.io/priority-class": "high",
        "other": "x"}}}
    spec = parse_spec({"trainingDataUrl": "s3://d/c.zip"})
    for stage in ("prepare", "train"):
        job = build_job(stage, body, spec, settings)
        pod, box = job["spec"]["template"]["spec"], container(job)
        assert box["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e.get("value") for e in box["env"]}
        assert (env["HOME"], env["TMPDIR"], env["XDG_CACHE_HOME"]) == (
            "/work", "/work", "/work/.cache")
        assert env["HF_HUB_OFFLINE"] == "1"
        assert box["envFrom"] == [{"secretRef": {"name": "store-creds"}},
                                  {"configMapRef": {"name": "proxy"}}]
        assert (pod["serviceAccountName"], pod["imagePullSecrets"]) == (
            "trainer", [{"name": "registry"}])
        assert volumes(job)["ca"]["configMap"] == {"name": "corporate-ca"}
        assert {"name": "ca", "mountPath": "/etc/ssl/corp"} in box["volumeMounts"]
        template = job["spec"]["template"]["metadata"]
        assert template["labels"]["team"] == "video" and template["annotations"] == {"a": "b"}
        assert template["labels"]["ltx-training.io/stage"] == stage  # ours win over extras
        labels = job["metadata"]["labels"]
        assert labels["kueue.x-k8s.io/priority-class"] == "high" and "other" not in labels
        assert "ephemeral-storage" in box["resources"]["requests"]
    train = build_job("train", body, spec, settings)
    assert volumes(train)["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    prepare = build_job("prepare", body, spec, settings)
    assert "shm" not in volumes(prepare)
    no_shm = settings.model_copy(update={"train_shm_size": "", "train_ephemeral_storage": ""})
    bare = build_job("train", body, spec, no_shm)
    assert "shm" not in volumes(bare)
    assert "ephemeral-storage" not in container(bare)["resources"]["requests"]


def test_both_jobs_are_valid_batch_v1_jobs():
    import kubernetes_validate

    settings = SETTINGS.model_copy(update={"train_tolerations": [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "trainer_args": ["--checkpoint-every", "100"], "trainer_service_account": "t",
        "trainer_volumes": [{"name": "ca", "configMap": {"name": "ca"}}],
        "trainer_volume_mounts": [{"name": "ca", "mountPath": "/etc/ssl/corp"}],
        "model_cache_claim_name": "cache"})
    spec = parse_spec({"trainingDataUrl": "s3://d/c.zip", "gpus": 2,
                       "activeDeadlineSeconds": 3600, "priorityClassName": "training",
                       "nodeSelector": {"pool": "gpu"}})
    by_url = parse_spec({"trainingDataUrl": "s3://d/c.zip", "model": {"url": "s3://m/x"}})
    for stage, given in (("prepare", spec), ("train", spec), ("train", by_url)):
        job = build_job(stage, BODY, given, settings)
        for version in ("1.30.0", "1.35.0"):
            kubernetes_validate.validate(job, version, strict=True)


def env_of(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(job)["env"]}


def test_one_node_with_four_gpus_starts_four_ranks_in_one_pod():
    job = build_job("train", BODY, parse_spec({"trainingDataUrl": "s3://d/c.zip", "gpus": 4}),
                    SETTINGS)
    env = {k: v.get("value") for k, v in env_of(job).items()}
    assert (env["PET_NPROC_PER_NODE"], env["PET_NNODES"], env["PET_NODE_RANK"]) == (
        "4", "1", "0")
    assert (env["PET_RDZV_BACKEND"], env["PET_RDZV_ID"], env["PET_MAX_RESTARTS"]) == (
        "c10d", "u-1", "3")
    assert "PET_RDZV_ENDPOINT" not in env  # one node: the launcher's own local rendezvous
    assert "LTX_EXTEND_SHARD_BASE" not in env
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"][
        "spec"]
    assert container(job)["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert container(job)["args"][:2] == ["job", "train"]  # the same command: the launcher
    one = build_job("train", BODY, parse_spec({"trainingDataUrl": "s3://d/c.zip"}), SETTINGS)
    assert not {n for n in env_of(one) if n.startswith("PET_")}  # one rank: in-process
    prepare = build_job("prepare", BODY, parse_spec({"trainingDataUrl": "s3://d/c.zip",
                                                     "gpus": 4, "nodes": 2}), SETTINGS)
    assert not {n for n in env_of(prepare) if n.startswith("PET_")}
    assert "completionMode" not in prepare["spec"]


def test_two_nodes_are_an_indexed_job_behind_a_headless_service():
    from ltx_operator.jobs import build_service

    settings = SETTINGS.model_copy(update={"rendezvous_port": 29500, "rank_restarts": 5,
                                           "shard_base": True})
    spec = parse_spec({"trainingDataUrl": "s3://d/c.zip", "gpus": 2, "nodes": 2,
                       "backoffLimit": 4})
    job = build_job("train", BODY, spec, settings)
    # one pod's failure fails the gang's Job at once: the operator restarts the whole gang
    # (backoffLimit 4 counts those restarts), never one pod into a broken rendezvous
    assert (job["spec"]["completionMode"], job["spec"]["completions"],
            job["spec"]["parallelism"], job["spec"]["backoffLimit"]) == ("Indexed", 2, 2, 0)
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == "door-train" and pod["restartPolicy"] == "Never"
    env = env_of(job)
    assert env["PET_NODE_RANK"] == {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}
    assert {k: v.get("value") for k, v in env.items() if k.startswith("PET_")} == {
        "PET_NPROC_PER_NODE": "2", "PET_NNODES": "2", "PET_NODE_RANK": None,
        "PET_RDZV_BACKEND": "c10d", "PET_RDZV_ID": "u-1", "PET_MAX_RESTARTS": "0",
        "PET_RDZV_ENDPOINT": "door-train-0.door-train:29500"}
    assert env["LTX_EXTEND_SHARD_BASE"]["value"] == "1"
    assert {"name": "rendezvous", "containerPort": 29500} in container(job)["ports"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"  # one gang
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2, 3, 4]
    assert rules[1] == {"action": "FailJob", "onPodConditions": [  # restarted, not counted
        {"type": "DisruptionTarget", "status": "True"}]}
    one = build_job("train", BODY, parse_spec({"trainingDataUrl": "s3://d/c.zip", "gpus": 2,
                                               "backoffLimit": 4}), settings)
    assert one["spec"]["backoffLimit"] == 4  # one pod: the Job retries it, preemption free
    assert one["spec"]["podFailurePolicy"]["rules"][1]["action"] == "Ignore"
    assert env_of(one)["PET_MAX_RESTARTS"]["value"] == "5"  # its launcher restarts ranks
    assert build_job("train", BODY, spec, settings, deadline_left=70)["spec"][
        "activeDeadlineSeconds"] == 70  # a restarted gang's Job: what is left of the deadline

    service = build_service(BODY, settings)
    assert service["metadata"]["name"] == pod["subdomain"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True  # names before readiness
    selector = service["spec"]["selector"]
    assert selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "rendezvous", "protocol": "TCP",
                                         "port": 29500, "targetPort": 29500}]


def test_the_gang_objects_are_valid_for_kubernetes():
    import kubernetes_validate

    from ltx_operator.jobs import build_service

    spec = parse_spec({"trainingDataUrl": "s3://d/c.zip", "gpus": 2, "nodes": 3,
                       "activeDeadlineSeconds": 3600})
    four = parse_spec({"trainingDataUrl": "s3://d/c.zip", "gpus": 4})
    settings = SETTINGS.model_copy(update={"shard_base": True})
    objects = [build_job("train", BODY, spec, settings), build_job("train", BODY, four, SETTINGS),
               build_service(BODY, SETTINGS)]
    for obj in objects:
        for version in ("1.30.0", "1.35.0"):
            kubernetes_validate.validate(obj, version, strict=True)


def test_nodes_is_between_1_and_16_and_defaults_to_1():
    from ltx_contract.spec import SpecError

    assert parse_spec({"trainingDataUrl": "s3://d/c.zip"}).nodes == 1
    assert parse_spec({"trainingDataUrl": "s3://d/c.zip", "nodes": 16}).nodes == 16
    for bad in (0, 17):
        try:
            parse_spec({"trainingDataUrl": "s3://d/c.zip", "nodes": bad})
        except SpecError as exc:
            assert "nodes" in str(exc)
        else:
            raise AssertionError(f"nodes {bad} was accepted")


def test_distributed_settings_come_from_the_environment():
    settings = OperatorSettings.from_env({"LTX_OPERATOR_RENDEZVOUS_PORT": "29555",
                                          "LTX_OPERATOR_RANK_RESTARTS": "0",
                                          "LTX_OPERATOR_SHARD_BASE": "true"})
    assert (settings.rendezvous_port, settings.rank_restarts, settings.shard_base) == (
        29555, 0, True)
    default = OperatorSettings.from_env({})
    assert (default.rendezvous_port, default.rank_restarts, default.shard_base) == (
        29400, 3, False)
