"""Fetching the training archive and validation clips.

http(s):// is streamed to disk with a size cap, timeouts and bounded retries; every
hop (redirects included) is checked on the address it resolves to, and the request
goes to that very address, so a name cannot resolve differently between the check
and the connection. s3:// goes through the minio client with credentials from the
environment; file:// only where the stage allows it (local runs).

Messages name the host and the HTTP status, never credentials or query strings.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

from ltx_contract.outcomes import DownloadFailure, InvalidInput

log = logging.getLogger(__name__)

#: Cloud metadata endpoints, refused whatever the configuration says.
METADATA_ADDRESSES = {
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
}
REDIRECTS = (301, 302, 303, 307, 308)
RETRIED_STATUSES = (408, 425, 429, 500, 502, 503, 504)


@dataclass(frozen=True)
class FetchPolicy:
    allow_file_urls: bool = False
    allow_private_networks: bool = False
    max_bytes: int = 20 * 2**30
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    attempts: int = 3
    backoff_seconds: float = 1.0
    max_redirects: int = 5


def _address_refusal(address: str, allow_private: bool) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES or ip.is_link_local:
        return "a link-local or cloud metadata address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "a reserved address"
    if (ip.is_loopback or ip.is_private) and not allow_private:
        return "a loopback or private address"
    return None


def resolve_public(host: str, port: int, what: str, policy: FetchPolicy) -> str:
    """The address to connect to for `host`, refusing internal ones."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DownloadFailure(f"could not download the {what}: host {host} not found "
                              f"({exc.strerror})") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:  # every answer must be acceptable, not just the first
        if refusal := _address_refusal(address, policy.allow_private_networks):
            raise InvalidInput(f"the {what} URL points at {host}, which resolves to {refusal}; "
                               "such URLs are not allowed")
    return addresses[0]


def _pool(scheme: str, host: str, address: str, port: int, policy: FetchPolicy
          ) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=policy.connect_timeout, read=policy.read_timeout)
    if scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address, port, timeout=timeout, retries=False, server_hostname=host,
            assert_hostname=host, cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
        )
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)


def _get_http(url: str, dest: Path, what: str, policy: FetchPolicy) -> None:
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"the {what} redirects to a URL that is not http(s)")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = resolve_public(host, port, what, policy)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "User-Agent": "ltx-extend"}
        with _pool(parts.scheme, host, address, port, policy) as pool:
            try:
                response = pool.urlopen("GET", target, headers=headers, redirect=False,
                                        preload_content=False, retries=False)
            except urllib3.exceptions.HTTPError as exc:
                raise _Retryable(f"could not download the {what} from {host}: "
                                 f"{type(exc).__name__}") from None
            try:
                if response.status in REDIRECTS and response.headers.get("Location"):
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status != 200:
                    message = f"could not download the {what} from {host}: HTTP {response.status}"
                    if response.status in RETRIED_STATUSES:
                        raise _Retryable(message)
                    raise DownloadFailure(message)
                _stream(response, dest, what, host, policy)
                return
            finally:
                response.release_conn()
    raise DownloadFailure(f"could not download the {what}: more than {policy.max_redirects} "
                          "redirects")


def _stream(response: urllib3.BaseHTTPResponse, dest: Path, what: str, host: str,
            policy: FetchPolicy) -> None:
    declared = int(response.headers.get("Content-Length") or 0)
    if declared > policy.max_bytes:
        raise InvalidInput(f"the {what} is {declared} bytes, over the {policy.max_bytes}-byte "
                           "limit")
    written = 0
    try:
        with dest.open("wb") as out:
            for chunk in response.stream(1 << 20):
                written += len(chunk)
                if written > policy.max_bytes:
                    raise InvalidInput(f"the {what} is over the {policy.max_bytes}-byte limit")
                out.write(chunk)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _Retryable(f"could not download the {what} from {host}: transfer broke off "
                         f"({type(exc).__name__})") from None
    if declared and written != declared:
        raise _Retryable(f"could not download the {what} from {host}: got {written} of "
                         f"{declared} bytes")


class _Retryable(DownloadFailure):
    pass


def _get_s3(url: str, dest: Path, what: str, policy: FetchPolicy) -> None:
    from minio.error import S3Error

    from ..s3 import client_from_env, split_s3_url

    bucket, key = split_s3_url(url)
    client = client_from_env()
    try:
        size = client.stat_object(bucket, key).size or 0
        if size > policy.max_bytes:
            raise InvalidInput(f"the {what} is {size} bytes, over the {policy.max_bytes}-byte "
                               "limit")
        client.fget_object(bucket, key, str(dest))
    except S3Error as exc:
        raise DownloadFailure(f"could not download the {what} from S3 bucket {bucket}: "
                              f"{exc.code}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _Retryable(f"could not download the {what} from S3 bucket {bucket}: "
                         f"{type(exc).__name__}") from None


def fetch(url: str, dest: Path, what: str, policy: FetchPolicy) -> Path:
    """Fetch `url` to `dest` (or return the local path of a file:// URL).

    `what` names the thing in messages ("training data", "validation clip 1").
    Raises DownloadFailure or InvalidInput; never leaves a partial file at `dest`.
    """
    scheme = urlsplit(url).scheme
    if scheme == "file":
        if not policy.allow_file_urls:
            raise InvalidInput(f"the {what} URL is a file:// URL, which only local runs allow")
        path = Path(urlsplit(url).path)
        if not path.is_file():
            raise DownloadFailure(f"could not read the {what}: {path} does not exist")
        return path
    getter = {"http": _get_http, "https": _get_http, "s3": _get_s3}.get(scheme)
    if getter is None:
        raise InvalidInput(f"the {what} URL must be http(s)://, s3:// or file://")
    partial = dest.with_name(dest.name + ".part")
    for attempt in range(1, policy.attempts + 1):
        try:
            getter(url, partial, what, policy)
            partial.replace(dest)
            return dest
        except _Retryable as exc:
            if attempt == policy.attempts:
                raise DownloadFailure(f"{exc.message} (after {attempt} attempts)") from None
            log.warning("%s; retrying (%d/%d)", exc.message, attempt, policy.attempts)
            time.sleep(policy.backoff_seconds * 2 ** (attempt - 1))
        finally:
            partial.unlink(missing_ok=True)
    raise AssertionError("unreachable")

