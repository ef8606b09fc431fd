"""The Kubernetes API calls the operator makes beyond Kopf's own watches."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException

from ltx_contract.resource import GROUP, PLURAL, VERSION

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
_api: client.ApiClient | None = None
#: connections kept open to the API server: one per worker thread that calls it
_pool_size = 20
T = TypeVar("T")


class Conflict(Exception):
    """A write named a resourceVersion that is no longer the object's."""


def configure(api_client: client.ApiClient) -> None:
    global _api
    _api = api_client


def size_pool(workers: int) -> None:
    """Keep a connection open for each of `workers` threads: the client's default (5
    per CPU) is fewer, and each connection over it is opened (a TLS handshake, on
    both sides) and dropped again on every call."""
    global _pool_size
    _pool_size = workers


def api() -> client.ApiClient:
    global _api
    if _api is None:
        from kubernetes import config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = max(
            configuration.connection_pool_maxsize or 0, _pool_size)
        _api = client.ApiClient(configuration)
    return _api


def api_message(exc: ApiException) -> str:
    """The API server's own message (its Status object), else the HTTP reason."""
    try:
        return json.loads(exc.body or "")["message"]
    except (ValueError, KeyError, TypeError):
        return str(exc.reason or exc.status)


def retry_after(exc: ApiException) -> float | None:
    """The seconds an overloaded API server asks to wait (its Retry-After header)."""
    value = (exc.headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _call(call: Callable[[], T], *codes: int, absent: Any = None) -> T | Any:
    """`call`'s answer, or `absent` when the API answers with one of `codes` (404: not
    there; 409: there already, or no longer the object named)."""
    try:
        return call()
    except ApiException as exc:
        if exc.status in codes:
            return absent
        raise


def create_job(job: dict[str, Any]) -> dict[str, Any] | None:
    """Create the Job and return it as stored; None when it exists already. A refusal
    (quota, admission webhook, invalid) raises ApiException."""
    created = _call(lambda: client.BatchV1Api(api()).create_namespaced_job(
        job["metadata"]["namespace"], job), 409)
    return None if created is None else api().sanitize_for_serialization(created)


def create_service(service: dict[str, Any]) -> bool:
    """Create the Service; False when it exists already. A refusal raises ApiException."""
    return _call(lambda: client.CoreV1Api(api()).create_namespaced_service(
        service["metadata"]["namespace"], service), 409, absent=False) is not False


def delete_service(namespace: str, name: str) -> bool:
    """Delete a Service; False when there is none (a training on one node has none)."""
    return _call(lambda: client.CoreV1Api(api()).delete_namespaced_service(name, namespace),
                 404, absent=False) is not False


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    job = _call(lambda: client.BatchV1Api(api()).read_namespaced_job(name, namespace), 404)
    return None if job is None else api().sanitize_for_serialization(job)


def get_training(namespace: str, name: str) -> dict[str, Any] | None:
    return _call(lambda: client.CustomObjectsApi(api()).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name), 404)


def patch_training_status(namespace: str, name: str, patch: dict[str, Any],
                          resource_version: str | None = None) -> dict[str, Any] | None:
    """Merge `patch` into the status; with `resource_version`, only if the object is
    still that version (else Conflict). None when the training is gone."""
    body: dict[str, Any] = {"status": patch}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        return _call(lambda: client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, body), 404)
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict(api_message(exc)) from None
        raise


def job_pods(namespace: str, job: str) -> list[dict[str, Any]]:
    """The Job's pods (a LIST: only for a finished Job whose pod the watch missed)."""
    pods = client.CoreV1Api(api()).list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    found = [api().sanitize_for_serialization(p) for p in pods.items]
    return [p for p in found if (p["metadata"].get("labels") or {}).get("job-name") == job]


def patch_job(namespace: str, name: str, patch: dict[str, Any]) -> bool:
    return _call(lambda: client.BatchV1Api(api()).patch_namespaced_job(name, namespace, patch),
                 404, absent=False) is not False


def set_workload_active(namespace: str, job_uid: str, active: bool,
                        version: str) -> bool:
    """Kueue's way to stop and restart a Job it manages: the Workload's `spec.active`
    (Kueue then suspends the Job, or admits it again). False when Kueue has not made
    the Workload (yet)."""
    objects = client.CustomObjectsApi(api())
    listed = objects.list_namespaced_custom_object(
        KUEUE_GROUP, version, namespace, "workloads",
        label_selector=f"{KUEUE_JOB_UID_LABEL}={job_uid}")
    workloads = [w for w in listed.get("items") or []
                 if (w["metadata"].get("labels") or {}).get(KUEUE_JOB_UID_LABEL) == job_uid]
    for workload in workloads:
        objects.patch_namespaced_custom_object(KUEUE_GROUP, version, namespace, "workloads",
                                               workload["metadata"]["name"],
                                               {"spec": {"active": active}})
    return bool(workloads)


def delete_training(namespace: str, name: str) -> None:
    """Delete the resource; its Jobs and pods follow through their owner references."""
    _call(lambda: client.CustomObjectsApi(api()).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name,
        body=client.V1DeleteOptions(propagation_policy="Background")), 404)


def delete_job(namespace: str, name: str, uid: str | None = None,
               foreground: bool = False) -> bool:
    """Delete a Job and its pods now; False when it is gone already. `uid`: only that
    Job, not a successor of the same name. `foreground`: the Job stays (being deleted)
    until its pods are gone."""
    gone = (404, 409) if uid else (404,)  # 409: the name is another Job's now
    return _call(lambda: client.BatchV1Api(api()).delete_namespaced_job(
        name, namespace, body=client.V1DeleteOptions(
            propagation_policy="Foreground" if foreground else "Background",
            preconditions=client.V1Preconditions(uid=uid) if uid else None)),
        *gone, absent=False) is not False
