"""The few Kubernetes API calls the handlers make beyond their own object."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from ltx_contract.resource import GROUP, PLURAL, VERSION

_api: client.ApiClient | None = None


def configure(api_client: client.ApiClient) -> None:
    global _api
    _api = api_client


def api() -> client.ApiClient:
    global _api
    if _api is None:
        from kubernetes import config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        _api = client.ApiClient()
    return _api


def create_job(job: dict[str, Any]) -> bool:
    """Create the Job; False when it exists already (a handler ran twice)."""
    try:
        client.BatchV1Api(api()).create_namespaced_job(job["metadata"]["namespace"], job)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        job = client.BatchV1Api(api()).read_namespaced_job(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return api().sanitize_for_serialization(job)


def get_training(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return client.CustomObjectsApi(api()).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def patch_training_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status})


def job_pods(namespace: str, job: str) -> list[dict[str, Any]]:
    """The Job's pods, newest last. Filtered here too: a selector is a request, and the
    result is checked rather than trusted."""
    pods = client.CoreV1Api(api()).list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    found = [api().sanitize_for_serialization(p) for p in pods.items]
    found = [p for p in found if (p["metadata"].get("labels") or {}).get("job-name") == job]
    return sorted(found, key=lambda p: p["metadata"].get("creationTimestamp") or "")


def patch_job(namespace: str, name: str, patch: dict[str, Any]) -> bool:
    try:
        client.BatchV1Api(api()).patch_namespaced_job(name, namespace, patch)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def delete_training(namespace: str, name: str) -> None:
    """Delete the resource; its Jobs and pods follow through their owner references."""
    try:
        client.CustomObjectsApi(api()).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name,
            body=client.V1DeleteOptions(propagation_policy="Background"))
    except ApiException as exc:
        if exc.status != 404:
            raise


def delete_job(namespace: str, name: str) -> bool:
    """Delete a Job and its pods now; False when it is gone already."""
    try:
        client.BatchV1Api(api()).delete_namespaced_job(
            name, namespace, body=client.V1DeleteOptions(propagation_policy="Background"))
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
