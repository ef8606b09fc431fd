"""The artifact store: plain paths, and S3 credentials from the chain (environment keys,
web identity, instance role) against a real S3 and STS server on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from minio.error import S3Error

from ltx_trainer.store import FileStore, open_store

ROLE_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
    "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.example"}}]}
S3_ONLY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def test_a_plain_folder_is_a_store_and_urls_keep_its_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = open_store("out")
    assert isinstance(plain, FileStore)
    source = tmp_path / "a.txt"
    source.write_text("x")
    assert plain.put_file(source, "run/a.txt") == "out/run/a.txt"
    assert (tmp_path / "out/run/a.txt").read_text() == "x"
    absolute = open_store(str(tmp_path / "out"))
    assert absolute.url("run/a.txt") == str(tmp_path / "out/run/a.txt")
    as_url = open_store((tmp_path / "out").as_uri())
    assert as_url.url("run/a.txt") == (tmp_path / "out/run/a.txt").as_uri()
    assert plain.keys("run/") == as_url.keys("run/") == ["run/a.txt"]


@pytest.mark.parametrize("bad", ["file://relative/out", "gs://bucket/x", "s3://", ""])
def test_a_store_that_is_not_a_folder_or_bucket_is_refused(bad):
    with pytest.raises(ValueError, match=r"file:///absolute/path|must be a folder|is empty"):
        open_store(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def authenticating_s3(tmp_path_factory) -> Iterator[dict[str, str]]:
    """S3 and STS (moto, server mode) in their own process, checking every request's
    signature and IAM policy: the shared S3 server of the other tests does not."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/")
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, "moto did not start"
            time.sleep(0.1)
    setup = {"endpoint_url": endpoint, "region_name": "us-east-1",
             "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", **setup)
    role = iam.create_role(RoleName="trainer", AssumeRolePolicyDocument=json.dumps(
        ROLE_TRUST))["Role"]["Arn"]
    iam.put_role_policy(RoleName="trainer", PolicyName="s3", PolicyDocument=json.dumps(S3_ONLY))
    iam.create_user(UserName="uploader")
    iam.put_user_policy(UserName="uploader", PolicyName="s3",
                        PolicyDocument=json.dumps(S3_ONLY))
    key = iam.create_access_key(UserName="uploader")["AccessKey"]
    boto3.client("s3", **setup).create_bucket(Bucket="runs")
    try:
        yield {"endpoint": endpoint, "role": role,
               "keys": {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}}
    finally:
        proc.terminate()
        proc.wait()
        log.close()


def _enforce_auth(endpoint: str, free_actions: float) -> None:
    """From now on every request is authenticated, after `free_actions` (moto checks
    even STS's AssumeRoleWithWebIdentity, which AWS takes unsigned)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth",
                                     data=str(free_actions).encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request).read()


def test_web_identity_credentials_without_keys(authenticating_s3, tmp_path, caplog):
    endpoint, role = authenticating_s3["endpoint"], authenticating_s3["role"]
    token = tmp_path / "token"  # what the kubelet projects for an IRSA service account
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl\n")
    irsa = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token), "AWS_ROLE_ARN": role,
            "AWS_EC2_METADATA_DISABLED": "true"}
    store = open_store("s3://runs/trainings", env=irsa)
    source = tmp_path / "result.json"
    source.write_text('{"outcome": "Succeeded"}')
    _enforce_auth(endpoint, free_actions=1)  # the STS exchange; S3 calls are checked
    assert store.put_file(source, "ns/name/uid/result.json") == \
        "s3://runs/trainings/ns/name/uid/result.json"
    assert store.keys("ns/") == ["ns/name/uid/result.json"]
    back = tmp_path / "back.json"
    assert store.get_file("ns/name/uid/result.json", back) and back.read_text() == \
        source.read_text()
    url = store.download_url("ns/name/uid/result.json")
    assert "X-Amz-Security-Token" in url  # signed with the session the role gave
    _enforce_auth(endpoint, free_actions=float("inf"))  # moto checks no presigned URL
    with urllib.request.urlopen(url) as response:
        assert response.read() == source.read_bytes()
    assert "web identity" not in caplog.text  # no failed link on the way

    _enforce_auth(endpoint, free_actions=0)
    wrong_keys = open_store("s3://runs/trainings", env={
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIAWRONG", "AWS_SECRET_ACCESS_KEY": "wrong"})
    with pytest.raises(S3Error) as refused:
        wrong_keys.keys("ns/")
    assert refused.value.code == "InvalidAccessKeyId"  # so the server does check keys


def test_environment_keys_come_before_web_identity(authenticating_s3, tmp_path):
    """With keys and a token both set, the keys sign (the token file cannot even be
    read, so the web identity link would fail)."""
    endpoint = authenticating_s3["endpoint"]
    store = open_store("s3://runs", env={
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
        **authenticating_s3["keys"], "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "missing"),
        "AWS_ROLE_ARN": authenticating_s3["role"], "AWS_EC2_METADATA_DISABLED": "true"})
    source = tmp_path / "a.txt"
    source.write_text("a")
    _enforce_auth(endpoint, free_actions=0)
    assert store.put_file(source, "k/a.txt") == "s3://runs/k/a.txt"


def test_no_credentials_at_all_sends_unsigned_requests(authenticating_s3, caplog):
    endpoint = authenticating_s3["endpoint"]
    _enforce_auth(endpoint, free_actions=0)
    anonymous = open_store("s3://runs", env={"AWS_ENDPOINT_URL": endpoint,
                                             "AWS_REGION": "us-east-1",
                                             "AWS_EC2_METADATA_DISABLED": "true"})
    with pytest.raises(S3Error, match="AccessDenied"):
        anonymous.client.stat_object("runs", "k/a.txt")
    assert "requests are anonymous" in caplog.text


def test_an_unreadable_token_file_is_logged_without_the_token(authenticating_s3, tmp_path,
                                                              caplog):
    endpoint = authenticating_s3["endpoint"]
    store = open_store("s3://runs", env={
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "no-token"),
        "AWS_ROLE_ARN": authenticating_s3["role"], "AWS_EC2_METADATA_DISABLED": "true"})
    _enforce_auth(endpoint, free_actions=0)
    with pytest.raises(S3Error, match="AccessDenied"):
        store.client.stat_object("runs", "k/a.txt")
    assert "no S3 credentials from web identity" in caplog.text
    assert str(Path(tmp_path / "no-token")) in caplog.text


def test_a_model_given_by_url_is_downloaded_once_and_an_interrupted_download_resumes(
        tiny_model, tmp_path, caplog):
    import logging
    import shutil

    from ltx_trainer.model.source import cache_name, resolve_model

    caplog.set_level(logging.INFO, logger="ltx_trainer.model.source")
    url = tiny_model.as_uri()
    cache = tmp_path / "model-cache"
    first = resolve_model(url, cache).path
    assert first.parent == cache and (first / "model_index.json").is_file()
    files = sorted(p.relative_to(tiny_model) for p in tiny_model.rglob("*") if p.is_file())
    assert sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file()) == files
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    caplog.clear()
    assert resolve_model(url, cache).path == first  # a retried pod on the same volume
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == stamps
    assert "found in the model cache" in caplog.text

    # a pod killed mid-download left some files; the next one fetches only the rest
    other = tmp_path / "other-cache"
    partial = other / f".{cache_name(url)}.partial"
    kept = files[: len(files) // 2]
    for relative in kept:
        (partial / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_model / relative, partial / relative)
    inodes = {r: (partial / r).stat().st_ino for r in kept}
    caplog.clear()
    resumed = resolve_model(url, other).path
    assert {r: (resumed / r).stat().st_ino for r in kept} == inodes  # not fetched again
    assert f"({len(files) - len(kept)} of {len(files)} files)" in caplog.text
    assert not partial.exists()


def test_a_url_that_holds_no_model_is_invalid_input(tmp_path):
    from ltx_contract.outcomes import InvalidInput
    from ltx_trainer.model.source import resolve_model

    (tmp_path / "empty" / "x.txt").parent.mkdir()
    (tmp_path / "empty" / "x.txt").write_text("x")
    with pytest.raises(InvalidInput, match="is not a diffusers model folder"):
        resolve_model((tmp_path / "empty").as_uri(), tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.partial"))
