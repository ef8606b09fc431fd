"""S3-compatible object storage through the minio client.

Endpoint, region and credentials come from the environment (a Secret, a service
account or the node provide them in the cluster), never from the spec:
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (e.g. http://minio.storage:9000; unset
means AWS S3), `AWS_REGION` / `AWS_DEFAULT_REGION`.

Credentials are looked for in the order the AWS SDKs use, the first that answers wins:
1. keys in the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
   `AWS_SESSION_TOKEN` (a Secret);
2. web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (IRSA on EKS, and any
   OIDC federation), exchanged at STS (`AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`,
   else the region's STS) for short-lived keys that are renewed before they expire;
3. the container or instance role: ECS / EKS Pod Identity credentials, then the EC2
   instance metadata service (skipped when `AWS_EC2_METADATA_DISABLED=true`);
4. none: requests go unsigned, which public buckets answer.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import urllib3
from minio import Minio
from minio.credentials import Credentials
from minio.credentials.providers import (
    ChainedProvider,
    IamAwsProvider,
    Provider,
    StaticProvider,
    WebIdentityProvider,
)

log = logging.getLogger(__name__)

#: Credential look-ups are quick or absent: never wait long on a metadata address.
_CREDENTIALS_HTTP = dict(timeout=urllib3.Timeout(connect=2.0, read=10.0),
                         retries=urllib3.Retry(total=3, backoff_factor=0.2,
                                               status_forcelist=[500, 502, 503, 504]))


def split_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/key/parts → (bucket, "key/parts")."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError("expected an s3://bucket/key URL")
    return parts.netloc, parts.path.lstrip("/")


def _region(env: Mapping[str, str]) -> str | None:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


def _sts_endpoint(env: Mapping[str, str]) -> str:
    explicit = env.get("AWS_ENDPOINT_URL_STS") or env.get("AWS_ENDPOINT_URL")
    if explicit:
        return explicit
    region = _region(env)
    if not region:
        return "https://sts.amazonaws.com"
    return f"https://sts.{region}.amazonaws.com" + (".cn" if region.startswith("cn-") else "")


class _Attempt(Provider):
    """One link of the chain: any failure (an unreadable token file, an unreachable
    metadata address off the cloud, a refusal) passes the turn to the next provider,
    logged without the identity token."""

    def __init__(self, inner: Provider, name: str, level: int = logging.WARNING):
        self.inner, self.name, self.level = inner, name, level

    def retrieve(self) -> Credentials:
        try:
            return self.inner.retrieve()
        except (ValueError, OSError, urllib3.exceptions.HTTPError) as exc:
            reason = re.sub(r"(WebIdentityToken=)[^&\s]+", r"\1…", str(exc))
            log.log(self.level, "no S3 credentials from %s: %s", self.name, reason)
            raise ValueError(reason) from exc


class _FormPost(urllib3.PoolManager):
    """Sends an STS call's parameters as a form body, as the AWS SDKs do, instead of in
    the URL, where proxies and access logs would keep the identity token."""

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any
                ) -> urllib3.BaseHTTPResponse:
        parts = urlsplit(url)
        if method == "POST" and parts.query and not kw.get("body"):
            kw["body"] = parts.query
            kw["headers"] = {**(kw.get("headers") or {}),
                             "Content-Type": "application/x-www-form-urlencoded"}
            url = urlunsplit(parts._replace(query=""))
        return super().urlopen(method, url, redirect=redirect, **kw)


class _Anonymous(Provider):
    """Last in the chain: no credentials, so the client sends unsigned requests."""

    def retrieve(self) -> Credentials | None:  # type: ignore[override]
        log.warning("no S3 credentials found (environment keys, web identity, instance "
                    "role): requests are anonymous")
        return None


def credential_chain(env: Mapping[str, str]) -> Provider:
    """Environment keys, then web identity, then the container or instance role."""
    providers: list[Provider] = []
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        providers.append(StaticProvider(access, secret, env.get("AWS_SESSION_TOKEN") or None))
    token_file, role = env.get("AWS_WEB_IDENTITY_TOKEN_FILE"), env.get("AWS_ROLE_ARN")
    if token_file and role:
        # read at every renewal: the kubelet rotates the projected token
        providers.append(_Attempt(WebIdentityProvider(
            jwt_provider_func=lambda: {"access_token": Path(token_file).read_text().strip()},
            sts_endpoint=_sts_endpoint(env), role_arn=role,
            role_session_name=env.get("AWS_ROLE_SESSION_NAME") or "ltx-extend",
            http_client=_FormPost(**_CREDENTIALS_HTTP)), "web identity"))
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true" or env.get(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI") or env.get(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        providers.append(_Attempt(IamAwsProvider(
            http_client=urllib3.PoolManager(**_CREDENTIALS_HTTP)), "the instance role",
            logging.INFO))
    return ChainedProvider([*providers, _Anonymous()])


def client_from_env(env: Mapping[str, str] | None = None) -> Minio:
    env = os.environ if env is None else env
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or (
        "https://s3.amazonaws.com")
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return Minio(parts.netloc, credentials=credential_chain(env), region=_region(env),
                 secure=parts.scheme == "https")
