"""Server-side printing for the API emulator, as the API server does it for custom
resources: the CRD's names (short names, categories) in discovery, typed lists, and a
`meta.k8s.io/v1` Table built from its `additionalPrinterColumns` when a client asks for
one (`kubectl get` does) — so a real kubectl can be pointed at the emulator."""

from __future__ import annotations

import datetime
import re
from typing import Any

from ltx_contract.resource import human_duration

from harness.kube_api import ApiServer

_STEP = re.compile(r'\.([A-Za-z0-9_-]+)|\[\?\(@\.([A-Za-z0-9_-]+)=="([^"]*)"\)\]')


def json_path(obj: Any, path: str) -> list[Any]:
    """The values at a printer column's path: `.a.b` steps and `[?(@.key=="value")]`
    filters, the subset of Kubernetes' JSONPath that the CRD's columns use."""
    found, at = [obj], 0
    while at < len(path):
        step = _STEP.match(path, at)
        if step is None:
            raise ValueError(f"printer column path {path!r}: unsupported at {path[at:]!r}")
        at = step.end()
        key, field, value = step.groups()
        if key is not None:
            found = [f[key] for f in found if isinstance(f, dict) and key in f]
        else:
            found = [i for f in found if isinstance(f, list) for i in f
                     if isinstance(i, dict) and str(i.get(field)) == value]
    return found


class TableServer(ApiServer):
    """The emulator, serving one CRD as the API server serves it (see the module)."""

    def serve_crd(self, crd: dict[str, Any]) -> None:
        names, group = crd["spec"]["names"], crd["spec"]["group"]
        version = next(v for v in crd["spec"]["versions"] if v.get("served"))
        info = self.resources[f"{group}/{version['name']}/{names['plural']}"]
        info.shortnames, info.categories = set(names.get("shortNames", ())), \
            set(names.get("categories", ()))
        info.singular = names.get("singular")
        self.__dict__["_printed"] = (names["plural"], names["listKind"],
                                     version.get("additionalPrinterColumns") or [])

    def _wants_table(self, request: Any) -> tuple[str, list[dict[str, Any]]] | None:
        printed = self.__dict__.get("_printed")
        accept = next((v for k, v in request.headers.items() if k.lower() == "accept"), "")
        if printed is None or request.resource is None \
                or request.resource.plural != printed[0]:
            return None
        return (printed[1], printed[2]) if "as=Table" in accept else (printed[1], [])

    async def _serve_list(self, request: Any) -> Any:
        listed = await super()._serve_list(request)
        wanted = self._wants_table(request)
        if wanted is None:
            return listed
        list_kind, columns = wanted
        if not columns:
            return {"apiVersion": f"{request.resource.group}/{request.resource.version}",
                    "kind": list_kind, **listed}
        return table(listed["items"], columns)

    async def _serve_fetch(self, request: Any) -> Any:
        obj = await super()._serve_fetch(request)
        wanted = self._wants_table(request)
        return table([obj], wanted[1]) if wanted and wanted[1] else obj


def table(items: list[dict[str, Any]], columns: list[dict[str, Any]]) -> dict[str, Any]:
    """What the API server answers a Table request with: a Name column, then the CRD's
    columns; each cell the path's first value, `date` cells as an age."""
    now = datetime.datetime.now(datetime.UTC)

    def cell(item: dict[str, Any], column: dict[str, Any]) -> Any:
        values = json_path(item, column["jsonPath"])
        if not values:
            return None
        if column["type"] == "date":
            stamp = datetime.datetime.fromisoformat(values[0].replace("Z", "+00:00"))
            return human_duration((now - stamp).total_seconds())
        return values[0]

    definitions = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                    "description": "Name of the resource"}]
    definitions += [{"name": c["name"], "type": c["type"], "format": c.get("format", ""),
                     "description": c.get("description", ""), "priority": c.get("priority", 0)}
                    for c in columns]
    rows = [{"cells": [item["metadata"]["name"], *(cell(item, c) for c in columns)],
             "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": item["metadata"]}} for item in items]
    return {"apiVersion": "meta.k8s.io/v1", "kind": "Table",
            "metadata": {"resourceVersion": "1"}, "columnDefinitions": definitions, "rows": rows}
