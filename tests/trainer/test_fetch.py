"""Fetching over real HTTP and S3 servers on loopback."""

from __future__ import annotations

import io
import socket

import pytest

from ltx_contract.outcomes import DownloadFailure, InvalidInput
from ltx_trainer.dataset.fetch import FetchPolicy, fetch, resolve_public

LOCAL = FetchPolicy(allow_private_networks=True, attempts=3, backoff_seconds=0.01,
                    connect_timeout=2, read_timeout=5)


def test_http_download_streams_to_disk(http_server, tmp_path):
    body = bytes(range(256)) * 5000
    url = http_server.serve_bytes("/clips.zip", body)
    dest = fetch(url, tmp_path / "data.zip", "training data", LOCAL)
    assert dest.read_bytes() == body
    assert not (tmp_path / "data.zip.part").exists()


def test_loopback_is_refused_unless_allowed(http_server, tmp_path):
    url = http_server.serve_bytes("/clips.zip", b"zip")
    with pytest.raises(InvalidInput, match="resolves to a loopback or private address"):
        fetch(url, tmp_path / "d.zip", "training data", FetchPolicy())
    assert http_server.hits == {}  # refused before any connection


@pytest.mark.parametrize("host", ["169.254.169.254", "[fd00:ec2::254]", "[::ffff:169.254.169.254]"])
def test_metadata_addresses_are_always_refused(tmp_path, host):
    with pytest.raises(InvalidInput, match="link-local or cloud metadata"):
        fetch(f"http://{host}/latest/meta-data/", tmp_path / "x", "training data", LOCAL)


def test_a_redirect_to_an_internal_address_is_refused(http_server, tmp_path):
    url = http_server.redirect("/go", "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(InvalidInput, match=r"169\.254\.169\.254, which resolves to a link-local"):
        fetch(url, tmp_path / "x", "training data", LOCAL)


def test_redirects_are_followed(http_server, tmp_path):
    target = http_server.serve_bytes("/real.zip", b"payload")
    url = http_server.redirect("/go", target)
    assert fetch(url, tmp_path / "x", "training data", LOCAL).read_bytes() == b"payload"


def test_failure_names_host_and_status_but_no_secrets(http_server, tmp_path):
    url = http_server.base.replace("http://", "http://user:hunter2@") + "/missing.zip?sig=SECRET"
    with pytest.raises(DownloadFailure) as info:
        fetch(url, tmp_path / "x", "training data", LOCAL)
    assert info.value.message == "could not download the training data from 127.0.0.1: HTTP 404"
    assert http_server.hits["/missing.zip"] == 1  # a 404 is not retried
    assert not list(tmp_path.iterdir())


def test_server_errors_are_retried_then_reported(http_server, tmp_path):
    http_server.serve_bytes("/flaky.zip", b"", status=503)
    with pytest.raises(DownloadFailure, match=r"HTTP 503 \(after 3 attempts\)"):
        fetch(http_server.base + "/flaky.zip", tmp_path / "x", "training data", LOCAL)
    assert http_server.hits["/flaky.zip"] == 3


def test_a_retry_that_succeeds(http_server, tmp_path):
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        body = b"ok" if calls["n"] == 2 else b""
        request.send_response(200 if calls["n"] == 2 else 502)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    http_server.routes["/once.zip"] = flaky
    assert fetch(http_server.base + "/once.zip", tmp_path / "x", "training data",
                 LOCAL).read_bytes() == b"ok"


def test_size_cap(http_server, tmp_path):
    url = http_server.serve_bytes("/big.zip", b"x" * 5000)
    small = FetchPolicy(allow_private_networks=True, max_bytes=1000)
    with pytest.raises(InvalidInput, match="over the 1000-byte limit"):
        fetch(url, tmp_path / "x", "training data", small)
    assert not list(tmp_path.iterdir())


def test_unknown_host_is_a_download_failure(tmp_path):
    with pytest.raises(DownloadFailure, match=r"host no-such-host\.invalid not found"):
        fetch("https://no-such-host.invalid/a.zip", tmp_path / "x", "training data", LOCAL)


def test_file_urls_only_when_allowed(tmp_path):
    source = tmp_path / "a.zip"
    source.write_bytes(b"zip")
    with pytest.raises(InvalidInput, match="only local runs allow"):
        fetch(source.as_uri(), tmp_path / "x", "training data", FetchPolicy())
    allowed = FetchPolicy(allow_file_urls=True)
    assert fetch(source.as_uri(), tmp_path / "x", "training data", allowed) == source


def test_s3_download_and_missing_key(s3_env, tmp_path):
    client = s3_env.client()
    if not client.bucket_exists("datasets"):
        client.make_bucket("datasets")
    client.put_object("datasets", "team/clips.zip", io.BytesIO(b"zipdata"), 7)
    dest = fetch("s3://datasets/team/clips.zip", tmp_path / "d.zip", "training data", LOCAL)
    assert dest.read_bytes() == b"zipdata"
    with pytest.raises(DownloadFailure) as info:
        fetch("s3://datasets/team/nope.zip", tmp_path / "e.zip", "training data", LOCAL)
    assert info.value.message == ("could not download the training data from S3 bucket "
                                  "datasets: NoSuchKey")
    assert "test-secret-key" not in info.value.message


def test_every_resolved_address_is_checked(monkeypatch):
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 80))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(InvalidInput, match="loopback or private"):
        resolve_public("mixed.example", 80, "training data", FetchPolicy())
