"""The API-server semantics the operator's tests add on top of kmock."""

from __future__ import annotations

import json

import aiohttp
import pytest
import pytest_asyncio

from harness import kube_api
from harness.operator_cluster import JOBS, NAMESPACE, Cluster

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def api(api_server):
    async with aiohttp.ClientSession() as session:
        yield Cluster(api_server[1], session)


JOB = {"apiVersion": "batch/v1", "kind": "Job",
       "metadata": {"name": "j", "namespace": NAMESPACE, "labels": {"stage": "train"}},
       "spec": {"suspend": False}, "status": {"active": 9}}


async def test_create_sets_identity_and_drops_status(api):
    created = await api.create(JOBS, JOB)
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert "status" not in created
    named = await api.create("/api/v1/namespaces/team/events", {
        "metadata": {"generateName": "ev-"}, "reason": "A"})
    other = await api.create("/api/v1/namespaces/team/events", {
        "metadata": {"generateName": "ev-"}, "reason": "B"})
    assert named["metadata"]["name"].startswith("ev-")
    assert named["metadata"]["name"] != other["metadata"]["name"]


async def test_writes_bump_the_version_and_spec_changes_the_generation(api):
    first = (await api.create(JOBS, JOB))["metadata"]
    labelled = (await api.request("PATCH", f"{JOBS}/j", {"metadata": {"labels": {"a": "b"}}}))
    assert int(labelled["metadata"]["resourceVersion"]) > int(first["resourceVersion"])
    assert labelled["metadata"]["generation"] == 1
    suspended = await api.request("PATCH", f"{JOBS}/j", {"spec": {"suspend": True}})
    assert suspended["metadata"]["generation"] == 2
    same = await api.request("PATCH", f"{JOBS}/j", {"spec": {"suspend": True}})
    assert same["metadata"]["generation"] == 2


async def test_a_stale_resource_version_is_a_conflict(api):
    first = (await api.create(JOBS, JOB))["metadata"]
    await api.request("PATCH", f"{JOBS}/j", {"metadata": {"labels": {"a": "b"}}})
    refused = await api.request("PATCH", f"{JOBS}/j", {
        "metadata": {"resourceVersion": first["resourceVersion"], "labels": {"a": "c"}}})
    assert refused["code"] == 409 and "stale" in refused["message"]
    assert (await api.request("GET", f"{JOBS}/j"))["metadata"]["labels"]["a"] == "b"


async def test_status_is_written_through_its_subresource_only(api):
    await api.create(JOBS, JOB)
    await api.request("PATCH", f"{JOBS}/j", {"status": {"active": 1}})
    assert "status" not in await api.request("GET", f"{JOBS}/j")
    await api.request("PATCH", f"{JOBS}/j/status", {"status": {"active": 1},
                                                    "spec": {"suspend": True}})
    job = await api.request("GET", f"{JOBS}/j")
    assert job["status"] == {"active": 1} and job["spec"]["suspend"] is False


async def test_lists_honour_label_selectors(api):
    await api.create(JOBS, JOB)
    await api.create(JOBS, {**JOB, "metadata": {**JOB["metadata"], "name": "k",
                                                "labels": {"stage": "prepare"}}})

    async def names(selector: str) -> set[str]:
        listed = await api.request("GET", f"{JOBS}?labelSelector={selector}")
        return {i["metadata"]["name"] for i in listed["items"]}

    assert await names("stage=train") == {"j"}
    assert await names("stage!=train") == {"k"}
    assert await names("stage") == {"j", "k"}
    assert await names("!stage") == set()


async def test_served_requests_leave_the_routing_log(api, api_server):
    emulator, _ = api_server
    await api.create(JOBS, JOB)
    for i in range(50):
        await api.request("PATCH", f"{JOBS}/j", {"metadata": {"labels": {"n": str(i)}}})
    assert (await api.request("GET", f"{JOBS}/j"))["metadata"]["labels"]["n"] == "49"
    assert len(emulator._requests) <= 3  # only what is in flight (e.g. watches) stays


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_faults_answer_errors_to_the_faulted_account_only(api, api_server):
    emulator, url = api_server
    await api.create(JOBS, JOB)
    emulator.inject(kube_api.ApiFaults(token="victim", seed=3, error_rate=1.0))
    codes, retry_after = set(), set()
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            async with session.get(f"{url}{JOBS}/j", headers=_as("victim")) as response:
                body = await response.json()
                codes.add(response.status)
                assert body["kind"] == "Status" and body["code"] == response.status
                if response.status == 429:
                    retry_after.add(response.headers["Retry-After"])
                    assert body["details"]["retryAfterSeconds"] == 1
        async with session.get(f"{url}{JOBS}/j", headers=_as("bystander")) as response:
            assert response.status == 200
    assert codes == {500, 503, 429} and retry_after == {"1"}
    counts = emulator.faults.counts
    assert counts["api_500"] + counts["api_503"] + counts["api_429"] == 30


async def test_faults_answer_409_to_writes(api, api_server):
    emulator, url = api_server
    await api.create(JOBS, JOB)
    emulator.inject(kube_api.ApiFaults(token="victim", conflict_rate=1.0))
    async with aiohttp.ClientSession() as session:
        async with session.patch(f"{url}{JOBS}/j", json={"metadata": {"labels": {"a": "b"}}},
                                 headers={**_as("victim"),
                                          "Content-Type": "application/merge-patch+json"}) as r:
            assert r.status == 409 and (await r.json())["reason"] == "Conflict"
        async with session.get(f"{url}{JOBS}/j", headers=_as("victim")) as response:
            assert response.status == 200
            assert "a" not in (await response.json())["metadata"]["labels"]
    assert emulator.faults.counts == {"api_409": 1}


async def test_a_cut_watch_is_followed_by_410_gone(api, api_server):
    emulator, url = api_server
    await api.create(JOBS, JOB)
    emulator.inject(kube_api.ApiFaults(token="victim", watch_cut_after=(0.3, 0.3)))
    watch = f"{url}/apis/batch/v1/jobs?watch=true"
    async with aiohttp.ClientSession() as session:
        events = []
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(watch, headers=_as("victim")) as response:
                async for line in response.content:
                    events.append(json.loads(line))
        assert [e["type"] for e in events] == ["ADDED"]  # the stream started, then broke off
        async with session.get(watch, headers=_as("victim")) as response:
            lines = [json.loads(line) async for line in response.content]
        assert [(e["type"], e["object"]["code"]) for e in lines] == [("ERROR", 410)]
        emulator.faults.watch_cut_after = None
        async with session.get(watch, headers=_as("victim")) as response:
            first = json.loads(await response.content.readline())
            assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "j"
    assert emulator.faults.counts == {"watch_cut": 1, "watch_gone": 1}


async def test_only_the_current_version_is_kept_and_observers_see_each_write(api, api_server):
    emulator, _ = api_server
    seen = []
    emulator.observers.append(lambda plural, obj: seen.append(
        (plural, obj["metadata"]["labels"].get("n"))))
    await api.create(JOBS, JOB)
    for i in range(20):
        await api.request("PATCH", f"{JOBS}/j", {"metadata": {"labels": {"n": str(i)}}})
    key = next(k for k in emulator.objects if k[2] == "j")
    assert len(emulator.objects[key].history) == 1
    assert (await api.request("GET", f"{JOBS}/j"))["metadata"]["labels"]["n"] == "19"
    assert seen == [("jobs", None), *(("jobs", str(i)) for i in range(20))]
