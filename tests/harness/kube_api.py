"""The Kubernetes API for the operator's tests: kmock, with the API-server semantics
the operator relies on and kmock 0.8 leaves out, restored as Kubernetes defines them.

`ApiServer` adds, on every write: `generateName`, `uid`, `creationTimestamp`,
`generation` (bumped when the spec changes), a cluster-wide `resourceVersion` bumped
on each write with a 409 when a write names a stale one, the status subresource split
(a write to `/status` changes only the status, a write to the object never its status),
and `labelSelector` on lists.

With `enforce(Rbac(...))` it holds one account (by its bearer token) to an RBAC role
as the API server's authorizer does — 403 for what the role does not grant — with the
`OwnerReferencesPermissionEnforcement` admission plugin's checks on owner references,
and records what the account used. `admission` hooks play webhooks and quota: each
sees a request first and may refuse it by raising `kmock.KubernetesError`.

It also keeps only the requests in flight in kmock's request log: kmock keeps every
request for assertions and, to route each new one, scans that whole log, which makes a
long run quadratic; and of each object only its current version (kmock keeps every
version, a deep copy per write). These tests assert on the API's current objects.

`observers` see every object the server stores, as it stores it (a soak's bookkeeping).
With `inject(ApiFaults(...))` the server misbehaves towards one account as a loaded or
restarting API server does: 500, 503 and 429 (with `Retry-After`) on a share of its
requests, 409 on a share of its writes, and its watch streams cut mid-way, the next
watch of that resource answered `410 Gone` (its resourceVersion has expired).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import itertools
import json
import random
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import kmock

VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
RESOURCES = (
    ("ltx-training.io/v1alpha1/ltxextendtrainings", "LtxExtendTraining", True),
    ("batch/v1/jobs", "Job", True),
    ("v1/pods", "Pod", True),
    ("v1/events", "Event", True),
    ("v1/secrets", "Secret", True),
    ("v1/services", "Service", True),
    ("kueue.x-k8s.io/v1beta1/workloads", "Workload", True),
    ("v1/namespaces", "Namespace", False),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False),
)
CREATE, UPDATE, LIST = kmock.action.CREATE, kmock.action.UPDATE, kmock.action.LIST
VERB_OF_ACTION = {kmock.action.LIST: "list", kmock.action.WATCH: "watch",
                  kmock.action.FETCH: "get", CREATE: "create", UPDATE: "patch",
                  kmock.action.DELETE: "delete"}
PLURAL_OF_KIND = {kind: key.rsplit("/", 1)[1] for key, kind, _ in RESOURCES}
#: Resources whose `status` is only written through the status subresource.
WITH_STATUS = {"ltxextendtrainings", "jobs", "pods"}


def declare(emulator: kmock.KubernetesEmulator) -> None:
    for key, kind, namespaced in RESOURCES:
        emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced,
                                                     verbs=VERBS, subresources={"status"})


def conflict(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=409, reason="Conflict", message=message)


@dataclass
class Rbac:
    """An account's role (the rules of a ClusterRole) and what the account used of it:
    (API group, resource[/subresource], verb)."""

    rules: list[dict[str, Any]]
    token: str
    user: str = "system:serviceaccount:ltx-system:ltx-extend"
    used: set[tuple[str, str, str]] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)

    def grants(self, group: str, resource: str, verb: str) -> bool:
        return any(group in r.get("apiGroups", ()) and resource in r.get("resources", ())
                   and verb in r.get("verbs", ()) for r in self.rules)

    def granted(self) -> set[tuple[str, str, str]]:
        return {(g, r, v) for rule in self.rules for g in rule["apiGroups"]
                for r in rule["resources"] for v in rule["verbs"]}

    def check(self, group: str, resource: str, verb: str, where: str) -> None:
        if not self.grants(group, resource, verb):
            message = (f'{resource}{"." + group if group else ""} is forbidden: User '
                       f'"{self.user}" cannot {verb} resource "{resource}" in API group '
                       f'"{group}"{where}')
            self.refused.append(message)
            raise kmock.KubernetesError(status=403, reason="Forbidden", message=message)
        self.used.add((group, resource, verb))


Admission = Callable[[Any], None]
#: (plural, the object as stored) after each write
Observer = Callable[[str, dict[str, Any]], None]
WRITES = {"PATCH", "PUT"}
#: What a loaded or restarting API server answers (the Status reason of each code).
ERRORS = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests"}


@dataclass
class ApiFaults:
    """The faults the API server injects into one account's requests: which requests,
    drawn from a seeded random generator (500, 503 and 429 take turns); `counts` tells
    how many of each kind it injected."""

    token: str
    seed: int = 0
    #: share of requests (watches excepted) answered 500, 503 or 429
    error_rate: float = 0.0
    #: share of writes (PATCH, PUT) answered 409 Conflict
    conflict_rate: float = 0.0
    #: a watch stream is cut after this many seconds (drawn uniformly); None: never
    watch_cut_after: tuple[float, float] | None = None
    retry_after: int = 1  # seconds, in a 429's Retry-After
    active: bool = True
    counts: collections.Counter = field(default_factory=collections.Counter)
    #: resources whose next watch is answered 410 Gone (their stream was cut)
    expired: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        # the kinds take turns: a short run with a few errors still sees each of them
        self.kinds = itertools.cycle(sorted(ERRORS))

    def applies(self, request: Any) -> bool:
        return self.active and request.resource is not None and bearer(request) == self.token

    def error(self, request: Any) -> aiohttp.web.Response | None:
        """The error this request is answered with instead, if any."""
        code = None
        if str(request.method.value) in WRITES and self.random.random() < self.conflict_rate:
            code = 409
        elif self.random.random() < self.error_rate:
            code = next(self.kinds)
        if code is None:
            return None
        self.counts[f"api_{code}"] += 1
        reason = ERRORS.get(code, "Conflict")
        message = ("Operation cannot be fulfilled: the object has been modified; please apply "
                   "your changes to the latest version and try again") if code == 409 else (
            f"the server could not answer ({reason})")
        status = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                  "code": code, "reason": reason, "message": message}
        headers = {}
        if code == 429:
            status["details"] = {"retryAfterSeconds": self.retry_after}
            headers["Retry-After"] = str(self.retry_after)
        return aiohttp.web.json_response(status, status=code, headers=headers)


def write_kubeconfig(path: Path, server: str, token: str, namespace: str) -> Path:
    """A kubeconfig for one user of the emulated cluster (what kubectl and the plugin read)."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dev",
        "clusters": [{"name": "dev", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": token}}],
        "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "me",
                                                 "namespace": namespace}}]}))
    return path


def bearer(request: Any) -> str | None:
    """The request's bearer token (header names are case-insensitive)."""
    for key, value in request.headers.items():
        if key.lower() == "authorization" and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return None


def selected(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors (`a=b,c!=d,e`), as list requests use them."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with the write semantics of a real API server (see the module)."""

    @property
    def rbac(self) -> Rbac | None:
        return self.__dict__.get("_rbac")

    def enforce(self, rbac: Rbac | None) -> None:
        self.__dict__["_rbac"] = rbac

    @property
    def admission(self) -> list[Admission]:
        return self.__dict__.setdefault("_admission", [])

    @property
    def observers(self) -> list[Observer]:
        return self.__dict__.setdefault("_observers", [])

    @property
    def faults(self) -> ApiFaults | None:
        return self.__dict__.get("_faults")

    def inject(self, faults: ApiFaults | None) -> None:
        self.__dict__["_faults"] = faults

    def _authorize(self, request: Any) -> None:
        """RBAC and OwnerReferencesPermissionEnforcement for the enforced account."""
        rbac = self.rbac
        if rbac is None or request.resource is None or not request.resource.plural \
                or bearer(request) != rbac.token:
            return  # discovery (/api, /apis/GROUP/VERSION) is open to every account
        verb = {"PUT": "update"}.get(str(request.method.value), None) \
            or VERB_OF_ACTION.get(request.action, str(request.method.value).lower())
        if verb == "delete" and request.name is None:
            verb = "deletecollection"
        group, plural = request.resource.group or "", request.resource.plural
        resource = f"{plural}/{request.subresource}" if request.subresource else plural
        where = f' in the namespace "{request.namespace}"' if request.namespace else ""
        rbac.check(group, resource, verb, where)
        refs = ((request.data or {}).get("metadata") or {}).get("ownerReferences") \
            if isinstance(request.data, dict) and verb in ("create", "patch", "update") else None
        for ref in refs or []:
            # setting ownerReferences needs delete on the object; blockOwnerDeletion needs
            # update on the owner's finalizers
            rbac.check(group, plural, "delete", where)
            if ref.get("blockOwnerDeletion"):
                owner_group = ref["apiVersion"].rpartition("/")[0]
                rbac.check(owner_group, f"{PLURAL_OF_KIND[ref['kind']]}/finalizers", "update",
                           where)

    def _writes(self) -> asyncio.Lock:
        if "_write_lock" not in self.__dict__:
            self.__dict__["_write_lock"] = asyncio.Lock()
            self.__dict__["_versions"] = itertools.count(1)
        return self.__dict__["_write_lock"]

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        try:
            faults = self.faults
            if faults is not None and faults.applies(request):
                if request.action == kmock.action.WATCH:
                    return await self._faulty_watch(request, faults)
                if (answer := faults.error(request)) is not None:
                    return answer
            self._authorize(request)
            for admit in list(self.admission):
                admit(request)
            return await self._serve(request)
        except jsonpatch.JsonPatchException as exc:  # e.g. a failed `test` of the version
            raise kmock.KubernetesError(status=422, reason="Invalid",
                                        message=f"the JSON patch does not apply: {exc}") from None
        finally:  # served: out of the log (by identity; equal requests are other requests)
            for index in range(len(self._requests) - 1, -1, -1):
                if self._requests[index] is request:
                    del self._requests[index]
                    break

    async def _faulty_watch(self, request: Any, faults: ApiFaults
                            ) -> aiohttp.web.StreamResponse:
        """A watch of the faulted account: `410 Gone` if its last stream was cut, else the
        stream, cut after a while (the connection dropped, as a restarting server does)."""
        plural = request.resource.plural
        if plural in faults.expired:
            faults.expired.discard(plural)
            faults.counts["watch_gone"] += 1
            gone = {"type": "ERROR", "object": {
                "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "code": 410, "reason": "Expired",
                "message": "too old resource version: the watch must start again from a list"}}
            return aiohttp.web.Response(body=json.dumps(gone).encode() + b"\n",
                                        content_type="application/json")
        self._authorize(request)
        serving = asyncio.ensure_future(self._serve(request))
        if faults.watch_cut_after is None:
            return await serving
        done, _ = await asyncio.wait({serving}, timeout=faults.random.uniform(
            *faults.watch_cut_after))
        if done:
            return serving.result()
        faults.counts["watch_cut"] += 1
        faults.expired.add(plural)
        transport = request._raw_request.transport
        if transport is not None:
            transport.abort()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await serving
        raise asyncio.CancelledError  # the connection is gone: nothing to answer

    @property
    def pod_logs(self) -> dict[tuple[str, str], str]:
        """(namespace, pod) → its log, served on `pods/NAME/log` as the kubelet would."""
        return self.__dict__.setdefault("_pod_logs", {})

    async def _serve(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural == "pods" \
                and request.subresource == "log":
            text = self.pod_logs.get((request.namespace, request.name))
            if text is None:
                raise kmock.KubernetesError(status=404, reason="NotFound",
                                            message=f'pods "{request.name}" not found')
            tail = request.params.get("tailLines")
            if tail:
                text = "".join(text.splitlines(keepends=True)[-int(tail):])
            return aiohttp.web.Response(text=text, content_type="text/plain")
        if request.resource is None or request.action not in (CREATE, UPDATE) \
                or not isinstance(request.data, dict):
            return await super()._handle(request)
        async with self._writes():  # the check and the write are one step, as in etcd
            if request.action == CREATE:
                self._on_create(request)
            else:
                self._on_update(request)
            key = (request.resource, request.namespace or (request.data.get("metadata") or {})
                   .get("namespace"), request.name or (request.data.get("metadata") or {})
                   .get("name"))
            response = await super()._handle(request)
            self._trim(key)
            if self.observers and key in self._objects and not self._objects[key].deleted:
                stored = self._objects[key].raw
                for observe in list(self.observers):
                    observe(request.resource.plural, stored)
            return response

    def _trim(self, key: Any) -> None:
        """Forget an object's earlier versions (kmock keeps each as a deep copy)."""
        if key not in self._objects:
            return
        history = self._objects[key].history
        last = max((i for i, version in enumerate(history) if version is not None), default=0)
        if last:
            del history[:last]

    def _current(self, request: Any) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        obj = self._objects[key] if key in self._objects else None
        return None if obj is None or obj.deleted else obj.raw

    def _next_version(self) -> str:
        return str(next(self.__dict__["_versions"]))

    def _on_create(self, request: Any) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_version()
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        if request.resource.plural in WITH_STATUS:
            request.data.pop("status", None)  # the status is the controllers' to write

    def _on_update(self, request: Any) -> None:
        current = self._current(request)
        if current is None:
            return  # kmock answers 404
        meta = request.data.get("metadata") or {}
        sent = meta.get("resourceVersion")
        if sent and sent != current["metadata"].get("resourceVersion"):
            raise conflict(f"the object has been modified; please apply your changes to the "
                           f"latest version (resourceVersion {sent} is stale)")
        if request.resource.plural in WITH_STATUS:
            if request.subresource == "status":
                for key in list(request.data):
                    if key != "status":
                        del request.data[key]
            else:
                request.data.pop("status", None)
        data_meta = request.data.setdefault("metadata", {})
        for key in ("uid", "creationTimestamp", "generation"):
            data_meta.pop(key, None)  # set by the server only
        data_meta["resourceVersion"] = self._next_version()
        if "spec" in request.data and request.subresource != "status" \
                and _merged(current.get("spec"), request.data["spec"]) != current.get("spec"):
            data_meta["generation"] = int(current["metadata"].get("generation") or 1) + 1

    async def _serve_list(self, request: Any) -> Any:
        listed = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            listed["items"] = [i for i in listed["items"] if selected(
                (i.get("metadata") or {}).get("labels") or {}, selector)]
        return listed


def _merged(old: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386) of `patch` onto `old`."""
    if not isinstance(patch, dict):
        return patch
    result = dict(old) if isinstance(old, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merged(result.get(key), value)
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
