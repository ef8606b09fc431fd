"""The prepare (CPU) and train (GPU) Jobs of a training, built from its spec.

Names are deterministic (`<name>-prepare`, `<name>-train`), so re-running a handler
finds the Job it made instead of making another.
"""

from __future__ import annotations

from typing import Any

from ltx_contract.outcomes import ExitCode
from ltx_contract.resource import GROUP
from ltx_contract.spec import TrainingSpec

from .settings import OperatorSettings

MANAGED_BY = {"app.kubernetes.io/managed-by": "ltx-extend"}
TRAINING_LABEL = f"{GROUP}/training"
STAGE_LABEL = f"{GROUP}/stage"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
CONTAINER = "trainer"
MODEL_MOUNT = "/models"
#: Scratch space of the pod (the root filesystem is read-only): dataset, cache, checkpoints.
WORK_MOUNT = "/work"


def job_name(name: str, stage: str) -> str:
    return f"{name}-{stage}"


def run_path(namespace: str, name: str, uid: str) -> str:
    return f"{namespace}/{name}/{uid}"


def build_job(stage: str, body: dict[str, Any], spec: TrainingSpec,
              settings: OperatorSettings) -> dict[str, Any]:
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta.get("uid", "")
    labels = {**MANAGED_BY, "app.kubernetes.io/name": "ltx-extend",
              "app.kubernetes.io/component": stage, TRAINING_LABEL: name, STAGE_LABEL: stage}
    queue = (meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL)
    if queue:
        labels[KUEUE_QUEUE_LABEL] = queue
    store = spec.output.url if spec.output and spec.output.url else settings.store_url
    secret = spec.output.secret_name if spec.output and spec.output.secret_name \
        else settings.store_secret
    args = ["job", stage, "--progress-port", str(settings.progress_port),
            "--work", WORK_MOUNT, *settings.trainer_args]
    env = [
        {"name": "LTX_EXTEND_SPEC", "value": spec.to_json()},
        {"name": "LTX_EXTEND_STORE", "value": store},
        {"name": "LTX_EXTEND_RUN", "value": run_path(namespace, name, uid)},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER, "image": settings.trainer_image, "args": args, "env": env,
        "ports": [{"name": "progress", "containerPort": settings.progress_port}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    if settings.store_endpoint:  # `env` wins over the Secret's `envFrom`
        env.append({"name": "AWS_ENDPOINT_URL", "value": settings.store_endpoint})
    container["volumeMounts"] = [{"name": "work", "mountPath": WORK_MOUNT}]
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container],
                           "automountServiceAccountToken": False,
                           "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                           "volumes": [{"name": "work", "emptyDir": {}}]}
    if stage == "prepare":
        container["resources"] = {"requests": {"cpu": settings.prepare_cpu,
                                               "memory": settings.prepare_memory}}
        backoff, deadline = 2, None
        if settings.prepare_node_selector:
            pod["nodeSelector"] = dict(settings.prepare_node_selector)
        if settings.prepare_tolerations:
            pod["tolerations"] = [dict(t) for t in settings.prepare_tolerations]
    else:
        gpu = spec.gpu_resource_name or settings.gpu_resource_name
        count = str(spec.gpus or settings.gpu_count)
        container["resources"] = {
            "requests": {"cpu": settings.train_cpu, "memory": settings.train_memory, gpu: count},
            "limits": {gpu: count},
        }
        claim = spec.model.claim_name if spec.model and spec.model.claim_name \
            else settings.model_claim_name
        if spec.model and spec.model.url:
            args += ["--model", spec.model.url]  # the trainer downloads it from the store
        elif claim:
            sub_path = (spec.model.sub_path if spec.model and spec.model.claim_name
                        else settings.model_sub_path) or ""
            pod["volumes"].append({"name": "model", "persistentVolumeClaim": {
                "claimName": claim, "readOnly": True}})
            container["volumeMounts"].append({"name": "model", "mountPath": MODEL_MOUNT,
                                              "readOnly": True})
            args += ["--model", f"{MODEL_MOUNT}/{sub_path}".rstrip("/")]
        elif settings.model_url:
            args += ["--model", settings.model_url]
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
        backoff, deadline = spec.backoff_limit, spec.active_deadline_seconds
    job_spec: dict[str, Any] = {
        "backoffLimit": backoff,
        "suspend": spec.suspend,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        # Invalid input and download failures will not get better on retry; a node
        # that goes away (preemption, drain) is not the pod's fault: retry without
        # counting, and the new pod resumes from the last checkpoint.
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {
                "containerName": CONTAINER, "operator": "In",
                "values": [int(ExitCode.INVALID_INPUT), int(ExitCode.DOWNLOAD_FAILURE)]}},
            {"action": "Ignore",
             "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
    }
    if deadline:
        job_spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name(name, stage), "namespace": namespace,
                         "labels": labels},
            "spec": job_spec}
