"""Kopf's connection to the API server: Kopf's own login (the Kubernetes client's
configuration, in the cluster or from a kubeconfig) on an HTTP session that keeps a
bounded number of connections. Kopf's own session has no bound: with many resources
changing at once it opens a TLS connection per request in flight (hundreds, each with
its buffers, and a handshake on both sides), where a few, kept open, serve them as fast."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import aiohttp
import kopf

#: Kopf's watches per namespace watched: trainings, Jobs and pods (and namespaces)
WATCHES = 4


def connections(max_workers: int, namespaces: Sequence[str]) -> int:
    """The connections kept: one per watch, held for as long as it streams, and as many
    again as the worker threads for the requests (finalizers, Events, patches); 0 (no
    bound) where a namespace is a pattern, whose watches are not counted beforehand."""
    if any(char in name for name in namespaces for char in "*?[!"):
        return 0
    return WATCHES * max(len(namespaces), 1) + max_workers


def login(connection_limit: int) -> Any:
    """A login handler (`kopf.on.login`) whose session keeps `connection_limit`
    connections (0: no bound)."""
    async def login_bounded(logger: Any, settings: kopf.OperatorSettings,
                      **kwargs: Any) -> kopf.AiohttpSession | None:
        info = kopf.login_via_client(logger=logger, settings=settings, **kwargs)
        if info is None:
            return None
        with warnings.catch_warnings():  # as Kopf's own session: basic auth is deprecated
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="kopf")
            auth = info.as_aiohttp_basic_auth()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connection_limit, ssl=info.as_ssl_context()),
            headers=info.as_http_headers(), auth=auth, proxy=info.proxy_url,
            trust_env=info.trust_env)
        return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace,
                                   expiration=info.expiration, priority=info.priority,
                                   aiohttp_session=session)
    return login_bounded
