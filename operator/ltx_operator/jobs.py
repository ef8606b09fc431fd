"""The prepare (CPU) and train (GPU) Jobs of a training, built from its spec and the
platform's settings.

Names are deterministic (`<name>-prepare`, `<name>-train`), so a second try finds the
Job the first one made instead of making another. Both pods pass the "restricted" Pod
Security Standard and write only to their volumes: the root filesystem is read-only.

A training on more than one node (`nodes > 1`) trains as an Indexed Job with one pod per
node, each pod's completion index its node rank, plus a headless Service named like the
Job, through which every pod reaches rank 0's rendezvous at `<job>-0.<service>`. The
ranks' launcher settings are torchrun's own `PET_*` variables. Such a gang fails as one:
any pod's failure fails its Job at once (no retry of one pod: a replacement cannot re-join
the survivors' rendezvous reliably), and the operator restarts the whole gang as a new
Job (reconcile: `_restart_gang`), counted against the spec's backoffLimit.
"""

from __future__ import annotations

from typing import Any

from ltx_contract.outcomes import FINAL_EXIT_CODES
from ltx_contract.spec import TrainingSpec

from .observed import (
    COMPLETION_INDEX,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    MANAGED_BY,
    STAGE_LABEL,
    TRAINING_LABEL,
)
from .settings import OperatorSettings

CONTAINER = "trainer"
MODEL_MOUNT = "/models"
MODEL_CACHE_MOUNT = "/model-cache"
#: Scratch space of the pod: dataset, caches, checkpoints, HOME and temporary files.
WORK_MOUNT = "/work"
#: Labels a training passes on to its Jobs (Kueue's queue and priority).
CARRIED_LABELS = (KUEUE_QUEUE_LABEL, KUEUE_PRIORITY_LABEL)
#: The named port of rank 0's c10d rendezvous (trainings on many nodes).
RENDEZVOUS_PORT_NAME = "rendezvous"


def job_name(name: str, stage: str) -> str:
    return f"{name}-{stage}"


def run_path(namespace: str, name: str, uid: str) -> str:
    return f"{namespace}/{name}/{uid}"


def service_name(name: str) -> str:
    """The headless Service of a training on many nodes: named like its train Job."""
    return job_name(name, "train")


def ranks(spec: TrainingSpec, settings: OperatorSettings) -> tuple[int, int]:
    """(nodes, GPUs per node) of the train Job: one rank per GPU."""
    return spec.nodes, spec.gpus or settings.gpu_count


def model_in_use(spec: TrainingSpec, settings: OperatorSettings) -> str | None:
    """The base model the train Job gets: the spec's, else the platform's; None when
    neither names one (nothing can train)."""
    if spec.model and spec.model.url:
        return spec.model.url
    if spec.model and spec.model.claim_name:
        return f"pvc://{spec.model.claim_name}/{spec.model.sub_path or ''}".rstrip("/")
    if settings.model_claim_name:
        return f"pvc://{settings.model_claim_name}/{settings.model_sub_path}".rstrip("/")
    return settings.model_url


def build_job(stage: str, body: dict[str, Any], spec: TrainingSpec,
              settings: OperatorSettings, deadline_left: int | None = None) -> dict[str, Any]:
    """`deadline_left`: what is left of the spec's activeDeadlineSeconds (a gang
    restart's Job); unset, all of it."""
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta.get("uid", "")
    gang = stage == "train" and spec.nodes > 1  # one pod per node, failing as one
    labels = {**MANAGED_BY, "app.kubernetes.io/name": "ltx-extend",
              "app.kubernetes.io/component": stage, TRAINING_LABEL: name, STAGE_LABEL: stage}
    carried = {k: v for k, v in (meta.get("labels") or {}).items() if k in CARRIED_LABELS}
    store = spec.output.url if spec.output and spec.output.url else settings.store_url
    secret = spec.output.secret_name if spec.output and spec.output.secret_name \
        else settings.store_secret
    args = ["job", stage, "--progress-port", str(settings.progress_port),
            "--work", WORK_MOUNT, *settings.trainer_args]
    env = [
        {"name": "LTX_EXTEND_SPEC", "value": spec.to_json()},
        {"name": "LTX_EXTEND_STORE", "value": store},
        {"name": "LTX_EXTEND_RUN", "value": run_path(namespace, name, uid)},
        # the root filesystem is read-only: home, temporary files and caches on /work
        {"name": "HOME", "value": WORK_MOUNT},
        {"name": "TMPDIR", "value": WORK_MOUNT},
        {"name": "XDG_CACHE_HOME", "value": f"{WORK_MOUNT}/.cache"},
    ]
    if settings.store_endpoint:  # `env` wins over the Secret's `envFrom`
        env.append({"name": "AWS_ENDPOINT_URL", "value": settings.store_endpoint})
    env += [dict(e) for e in settings.trainer_env]
    container: dict[str, Any] = {
        "name": CONTAINER, "image": settings.trainer_image, "args": args, "env": env,
        "ports": [{"name": "progress", "containerPort": settings.progress_port}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    env_from = [{"secretRef": {"name": secret}}] if secret else []
    env_from += [dict(e) for e in settings.trainer_env_from]
    if env_from:
        container["envFrom"] = env_from
    mounts = [{"name": "work", "mountPath": WORK_MOUNT}]
    volumes: list[dict[str, Any]] = [{"name": "work", "emptyDir": {}}]
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container],
                           "automountServiceAccountToken": False,
                           "securityContext": {"runAsNonRoot": True,
                                               "seccompProfile": {"type": "RuntimeDefault"}},
                           "volumes": volumes}
    if settings.trainer_service_account:
        pod["serviceAccountName"] = settings.trainer_service_account
    if settings.trainer_image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in settings.trainer_image_pull_secrets]
    requests: dict[str, str]
    if stage == "prepare":
        requests = {"cpu": settings.prepare_cpu, "memory": settings.prepare_memory}
        if settings.prepare_ephemeral_storage:
            requests["ephemeral-storage"] = settings.prepare_ephemeral_storage
        container["resources"] = {"requests": requests}
        backoff, deadline = 2, None
        if settings.prepare_node_selector:
            pod["nodeSelector"] = dict(settings.prepare_node_selector)
        if settings.prepare_tolerations:
            pod["tolerations"] = [dict(t) for t in settings.prepare_tolerations]
    else:
        gpu = spec.gpu_resource_name or settings.gpu_resource_name
        count = str(spec.gpus or settings.gpu_count)
        requests = {"cpu": settings.train_cpu, "memory": settings.train_memory, gpu: count}
        if settings.train_ephemeral_storage:
            requests["ephemeral-storage"] = settings.train_ephemeral_storage
        container["resources"] = {"requests": requests, "limits": {gpu: count}}
        args += _model_args(spec, settings, volumes, mounts)
        if settings.train_shm_size:  # PyTorch's data loader and NCCL share memory here
            volumes.append({"name": "shm", "emptyDir": {"medium": "Memory",
                                                        "sizeLimit": settings.train_shm_size}})
            mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        node_selector = {**settings.train_node_selector, **spec.node_selector}
        if node_selector:
            pod["nodeSelector"] = node_selector
        tolerations = [*(dict(t) for t in settings.train_tolerations),
                       *(t.model_dump(by_alias=True, exclude_none=True)
                         for t in spec.tolerations)]
        if tolerations:
            pod["tolerations"] = tolerations
        if spec.priority_class_name:
            pod["priorityClassName"] = spec.priority_class_name
        backoff = 0 if gang else spec.backoff_limit  # a gang retries as a whole
        deadline = spec.active_deadline_seconds if deadline_left is None else deadline_left
        env += _launcher_env(spec, settings, name, uid)
        if gang:  # pods reach each other as <job>-<index>.<service>
            pod["subdomain"] = service_name(name)
            container["ports"].append({"name": RENDEZVOUS_PORT_NAME,
                                       "containerPort": settings.rendezvous_port})
    volumes += [dict(v) for v in settings.trainer_volumes]
    container["volumeMounts"] = mounts + [dict(m) for m in settings.trainer_volume_mounts]
    template_meta: dict[str, Any] = {"labels": {**settings.trainer_pod_labels, **labels}}
    if settings.trainer_pod_annotations:
        template_meta["annotations"] = dict(settings.trainer_pod_annotations)
    job_spec: dict[str, Any] = {
        "backoffLimit": backoff,
        "suspend": spec.suspend,
        "template": {"metadata": template_meta, "spec": pod},
        # A malformed command line (2), invalid input (3; a diverged run too) and download
        # failures (4) will not get better on retry; a node that goes away (preemption,
        # drain) is not the pod's fault: retry without counting, and the new pod resumes
        # from the last checkpoint. A gang's preempted pod fails its Job too: the operator
        # restarts the gang without counting it.
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {
                "containerName": CONTAINER, "operator": "In",
                "values": [int(code) for code in FINAL_EXIT_CODES]}},
            {"action": "FailJob" if gang else "Ignore",
             "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
    }
    if deadline:
        job_spec["activeDeadlineSeconds"] = deadline
    if gang:
        # One pod per node, its completion index the node rank; Kueue admits the Job's
        # `nodes` pods as one gang.
        job_spec.update(completionMode="Indexed", completions=spec.nodes,
                        parallelism=spec.nodes)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name(name, stage), "namespace": namespace,
                         "labels": {**labels, **carried}},
            "spec": job_spec}


def _launcher_env(spec: TrainingSpec, settings: OperatorSettings, name: str,
                  uid: str) -> list[dict[str, Any]]:
    """torchrun's settings (its `PET_*` variables) for more than one rank; the base
    sharded across a node's ranks when the platform asks."""
    nodes, gpus = ranks(spec, settings)
    env: list[dict[str, Any]] = []
    if nodes * gpus > 1:
        env += [{"name": "PET_NPROC_PER_NODE", "value": str(gpus)},
                {"name": "PET_NNODES", "value": str(nodes)}]
        if nodes > 1:
            env.append({"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}})
        else:
            env.append({"name": "PET_NODE_RANK", "value": "0"})
        # on one node the launcher restarts failed ranks itself; a gang restarts as a
        # whole (a failed rank fails its pod, and so its Job)
        restarts = settings.rank_restarts if nodes == 1 else 0
        env += [{"name": "PET_RDZV_BACKEND", "value": "c10d"},
                {"name": "PET_RDZV_ID", "value": uid},
                {"name": "PET_MAX_RESTARTS", "value": str(restarts)}]
        if nodes > 1:
            endpoint = f"{job_name(name, 'train')}-0.{service_name(name)}"
            env.append({"name": "PET_RDZV_ENDPOINT",
                        "value": f"{endpoint}:{settings.rendezvous_port}"})
    if settings.shard_base:
        env.append({"name": "LTX_EXTEND_SHARD_BASE", "value": "1"})
    return env


def build_service(body: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """The headless Service of a training's train pods: stable names
    (`<job>-<index>.<service>`) that resolve before the pods are ready."""
    meta = body["metadata"]
    name = meta["name"]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service_name(name), "namespace": meta["namespace"],
                         "labels": {**MANAGED_BY, "app.kubernetes.io/name": "ltx-extend",
                                    "app.kubernetes.io/component": "train",
                                    TRAINING_LABEL: name, STAGE_LABEL: "train"}},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {TRAINING_LABEL: name, STAGE_LABEL: "train"},
                     "ports": [{"name": RENDEZVOUS_PORT_NAME, "protocol": "TCP",
                                "port": settings.rendezvous_port,
                                "targetPort": settings.rendezvous_port}]}}


def _model_args(spec: TrainingSpec, settings: OperatorSettings, volumes: list[dict[str, Any]],
                mounts: list[dict[str, Any]]) -> list[str]:
    """`--model` (and `--model-cache`) of the train Job, with the volumes they need."""
    url = spec.model.url if spec.model and spec.model.url else None
    claim, sub_path = None, ""
    if url is None and spec.model and spec.model.claim_name:
        claim, sub_path = spec.model.claim_name, spec.model.sub_path or ""
    elif url is None and settings.model_claim_name:
        claim, sub_path = settings.model_claim_name, settings.model_sub_path
    elif url is None:
        url = settings.model_url
    if claim:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": claim,
                                                                   "readOnly": True}})
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
        return ["--model", f"{MODEL_MOUNT}/{sub_path}".rstrip("/")]
    if url is None:
        return []  # not reached: a training without a model fails before any Job
    if settings.model_cache_claim_name:  # downloaded once per claim, kept across pods
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {
            "claimName": settings.model_cache_claim_name}})
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT})
        return ["--model", url, "--model-cache", MODEL_CACHE_MOUNT]
    return ["--model", url]
