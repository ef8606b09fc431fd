"""The API-server semantics the operator's tests add on top of kmock."""

from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio

from operator_cluster import JOBS, NAMESPACE, Cluster

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
