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
Job (`reconcile._restart_gang`), counted against the spec's backoffLimit.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class ModelSource:
    """Where the train Job's base model comes from: a store URL, or a claim (and a
    folder in it) mounted read-only."""

    url: str | None = None
    claim: str | None = None
    sub_path: str = ""

    @property
    def uri(self) -> str:
        """As the status shows it (`effective.model`)."""
        if self.claim is None:
            return self.url or ""
        return f"pvc://{self.claim}/{self.sub_path}".rstrip("/")


def model_source(spec: TrainingSpec, settings: OperatorSettings) -> ModelSource | None:
    """The base model the train Job gets: the spec's, else the platform's (a URL before a
    claim in the spec, a claim before a URL in the platform's settings); None when
    neither names one (nothing can train)."""
    if spec.model and spec.model.url:
        return ModelSource(url=spec.model.url)
    if spec.model and spec.model.claim_name:
        return ModelSource(claim=spec.model.claim_name, sub_path=spec.model.sub_path or "")
    if settings.model_claim_name:
        return ModelSource(claim=settings.model_claim_name, sub_path=settings.model_sub_path)
    return None if settings.model_url is None else ModelSource(url=settings.model_url)


def build_job(stage: str, body: dict[str, Any], spec: TrainingSpec,
              settings: OperatorSettings, deadline_left: int | None = None) -> dict[str, Any]:
    """The stage's Job. `deadline_left`: what is left of the spec's activeDeadlineSeconds
    (a gang restart's Job); unset, all of it."""
    meta = body["metadata"]
    carried = {k: v for k, v in (meta.get("labels") or {}).items() if k in CARRIED_LABELS}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name(meta["name"], stage), "namespace": meta["namespace"],
                         "labels": {**labels(meta["name"], stage), **carried}},
            "spec": job_spec(stage, spec, settings, deadline_left,
                             pod_template(stage, body, spec, settings))}


def labels(name: str, stage: str) -> dict[str, str]:
    """The labels of a training's objects of one stage (its Jobs, their pods, the
    Service)."""
    return {**MANAGED_BY, "app.kubernetes.io/name": "ltx-extend",
            "app.kubernetes.io/component": stage, TRAINING_LABEL: name, STAGE_LABEL: stage}


def _gang(stage: str, spec: TrainingSpec) -> bool:
    """One pod per node, failing as one."""
    return stage == "train" and spec.nodes > 1


def job_spec(stage: str, spec: TrainingSpec, settings: OperatorSettings,
             deadline_left: int | None, template: dict[str, Any]) -> dict[str, Any]:
    """Retries, the deadline and the failure policy around the pod template."""
    gang = _gang(stage, spec)
    if stage == "prepare":
        backoff, deadline = 2, None
    else:
        backoff = 0 if gang else spec.backoff_limit  # a gang retries as a whole
        deadline = spec.active_deadline_seconds if deadline_left is None else deadline_left
    job: dict[str, Any] = {
        "backoffLimit": backoff,
        "suspend": spec.suspend,
        "template": template,
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
        job["activeDeadlineSeconds"] = deadline
    if gang:
        # One pod per node, its completion index the node rank; Kueue admits the Job's
        # `nodes` pods as one gang.
        job.update(completionMode="Indexed", completions=spec.nodes, parallelism=spec.nodes)
    return job


def pod_template(stage: str, body: dict[str, Any], spec: TrainingSpec,
                 settings: OperatorSettings) -> dict[str, Any]:
    """The pod of the stage: its labels and annotations, and its spec."""
    name = body["metadata"]["name"]
    meta: dict[str, Any] = {"labels": {**settings.trainer_pod_labels, **labels(name, stage)}}
    if settings.trainer_pod_annotations:
        meta["annotations"] = dict(settings.trainer_pod_annotations)
    volumes, mounts = pod_volumes(stage, spec, settings)
    pod: dict[str, Any] = {"restartPolicy": "Never",
                           "containers": [container(stage, body, spec, settings, mounts)],
                           "automountServiceAccountToken": False,
                           "securityContext": {"runAsNonRoot": True,
                                               "seccompProfile": {"type": "RuntimeDefault"}},
                           "volumes": volumes}
    if settings.trainer_service_account:
        pod["serviceAccountName"] = settings.trainer_service_account
    if settings.trainer_image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in settings.trainer_image_pull_secrets]
    pod.update(_placement(stage, spec, settings))
    if _gang(stage, spec):  # pods reach each other as <job>-<index>.<service>
        pod["subdomain"] = service_name(name)
    return {"metadata": meta, "spec": pod}


def _placement(stage: str, spec: TrainingSpec, settings: OperatorSettings) -> dict[str, Any]:
    """Node selector, tolerations and priority: the platform's per stage, and the spec's
    for the train pods."""
    placed: dict[str, Any] = {}
    if stage == "prepare":
        if settings.prepare_node_selector:
            placed["nodeSelector"] = dict(settings.prepare_node_selector)
        if settings.prepare_tolerations:
            placed["tolerations"] = [dict(t) for t in settings.prepare_tolerations]
        return placed
    node_selector = {**settings.train_node_selector, **spec.node_selector}
    if node_selector:
        placed["nodeSelector"] = node_selector
    tolerations = [*(dict(t) for t in settings.train_tolerations),
                   *(t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations)]
    if tolerations:
        placed["tolerations"] = tolerations
    if spec.priority_class_name:
        placed["priorityClassName"] = spec.priority_class_name
    return placed


def container(stage: str, body: dict[str, Any], spec: TrainingSpec, settings: OperatorSettings,
              mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The trainer's container: its command line, environment, ports and resources."""
    args = ["job", stage, "--progress-port", str(settings.progress_port),
            "--work", WORK_MOUNT, *settings.trainer_args]
    ports = [{"name": "progress", "containerPort": settings.progress_port}]
    if stage == "train":
        args += _model_args(model_source(spec, settings), settings)
    if _gang(stage, spec):
        ports.append({"name": RENDEZVOUS_PORT_NAME, "containerPort": settings.rendezvous_port})
    made: dict[str, Any] = {
        "name": CONTAINER, "image": settings.trainer_image, "args": args,
        "env": _env(stage, body, spec, settings), "ports": ports,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "resources": _resources(stage, spec, settings),
        "volumeMounts": mounts,
    }
    secret = spec.output.secret_name if spec.output and spec.output.secret_name \
        else settings.store_secret
    env_from = [{"secretRef": {"name": secret}}] if secret else []
    env_from += [dict(e) for e in settings.trainer_env_from]
    if env_from:
        made["envFrom"] = env_from
    return made


def _env(stage: str, body: dict[str, Any], spec: TrainingSpec,
         settings: OperatorSettings) -> list[dict[str, Any]]:
    meta = body["metadata"]
    name, uid = meta["name"], meta.get("uid", "")
    store = spec.output.url if spec.output and spec.output.url else settings.store_url
    env = [
        {"name": "LTX_EXTEND_SPEC", "value": spec.to_json()},
        {"name": "LTX_EXTEND_STORE", "value": store},
        {"name": "LTX_EXTEND_RUN", "value": run_path(meta["namespace"], name, uid)},
        # the root filesystem is read-only: home, temporary files and caches on /work
        {"name": "HOME", "value": WORK_MOUNT},
        {"name": "TMPDIR", "value": WORK_MOUNT},
        {"name": "XDG_CACHE_HOME", "value": f"{WORK_MOUNT}/.cache"},
    ]
    if settings.store_endpoint:  # `env` wins over the Secret's `envFrom`
        env.append({"name": "AWS_ENDPOINT_URL", "value": settings.store_endpoint})
    env += [dict(e) for e in settings.trainer_env]
    if stage == "train":
        env += _launcher_env(spec, settings, name, uid)
    return env


def _resources(stage: str, spec: TrainingSpec, settings: OperatorSettings) -> dict[str, Any]:
    if stage == "prepare":
        requests = {"cpu": settings.prepare_cpu, "memory": settings.prepare_memory}
        if settings.prepare_ephemeral_storage:
            requests["ephemeral-storage"] = settings.prepare_ephemeral_storage
        return {"requests": requests}
    gpu = spec.gpu_resource_name or settings.gpu_resource_name
    count = str(spec.gpus or settings.gpu_count)
    requests = {"cpu": settings.train_cpu, "memory": settings.train_memory, gpu: count}
    if settings.train_ephemeral_storage:
        requests["ephemeral-storage"] = settings.train_ephemeral_storage
    return {"requests": requests, "limits": {gpu: count}}


def pod_volumes(stage: str, spec: TrainingSpec, settings: OperatorSettings
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, the container's mounts): the scratch space; for the train pod the
    model's claim (or the download cache) and the shared memory; then the platform's."""
    volumes: list[dict[str, Any]] = [{"name": "work", "emptyDir": {}}]
    mounts = [{"name": "work", "mountPath": WORK_MOUNT}]
    source = model_source(spec, settings) if stage == "train" else None
    if source is not None and source.claim:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": source.claim,
                                                                   "readOnly": True}})
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
    elif source is not None and settings.model_cache_claim_name:
        # downloaded once per claim, kept across pods
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {
            "claimName": settings.model_cache_claim_name}})
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT})
    if stage == "train" and settings.train_shm_size:
        # PyTorch's data loader and NCCL share memory here
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory",
                                                    "sizeLimit": settings.train_shm_size}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    volumes += [dict(v) for v in settings.trainer_volumes]
    return volumes, mounts + [dict(m) for m in settings.trainer_volume_mounts]


def _model_args(source: ModelSource | None, settings: OperatorSettings) -> list[str]:
    """`--model` (and `--model-cache`) of the train Job: the volumes `pod_volumes` mounts."""
    if source is None:
        return []  # not reached: a training without a model fails before any Job
    if source.claim:
        return ["--model", f"{MODEL_MOUNT}/{source.sub_path}".rstrip("/")]
    if settings.model_cache_claim_name:
        return ["--model", source.url or "", "--model-cache", MODEL_CACHE_MOUNT]
    return ["--model", source.url or ""]


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
                         "labels": labels(name, "train")},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {TRAINING_LABEL: name, STAGE_LABEL: "train"},
                     "ports": [{"name": RENDEZVOUS_PORT_NAME, "protocol": "TCP",
                                "port": settings.rendezvous_port,
                                "targetPort": settings.rendezvous_port}]}}
