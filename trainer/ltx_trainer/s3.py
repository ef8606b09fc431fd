"""S3-compatible object storage through the minio client.

Endpoint, region and credentials come from the environment (a Secret provides them
in the cluster), never from the spec: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`
(e.g. http://minio.storage:9000; unset means AWS S3), `AWS_REGION` /
`AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from minio import Minio


def split_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/key/parts → (bucket, "key/parts")."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError("expected an s3://bucket/key URL")
    return parts.netloc, parts.path.lstrip("/")


def client_from_env(env: os._Environ[str] | dict[str, str] | None = None) -> Minio:
    env = os.environ if env is None else env
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or (
        "https://s3.amazonaws.com")
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return Minio(
        parts.netloc,
        access_key=env.get("AWS_ACCESS_KEY_ID"),
        secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
        session_token=env.get("AWS_SESSION_TOKEN"),
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        secure=parts.scheme == "https",
    )
