"""The KMock-based Kubernetes API of tests/support/k8s_cluster.py checks its own emulation: label selectors, garbage
collection by owner uid, 403s and dry runs that store nothing."""

from __future__ import annotations

from typing import Optional

import pytest

from tests.support.k8s_cluster import FakeCluster


# ----------------------------------------------------------------------------- the emulation itself
@pytest.fixture(scope="module")
def cluster():
    with FakeCluster() as c:
        yield c


def _cm(name: str, labels: dict, owner_uid: Optional[str] = None) -> dict:
    meta: dict = {"name": name, "labels": labels}
    if owner_uid:
        meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": owner_uid}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}}


def test_list_honours_label_selectors(cluster):
    c = cluster.client(namespace="sel")
    c.request("POST", "ConfigMap", body=_cm("a", {"team": "x", "tier": "1"}))
    c.request("POST", "ConfigMap", body=_cm("b", {"team": "y"}))
    names = lambda sel: sorted(o["metadata"]["name"] for o in c.list_objects("ConfigMap", sel))  # noqa: E731
    assert names("team=x") == ["a"]
    assert names("team!=x") == ["b"]
    assert names("tier") == ["a"]
    assert names("!tier") == ["b"]
    assert names(None) == ["a", "b"]


def test_delete_collects_dependents_by_owner_uid(cluster):
    c = cluster.client(namespace="gc")
    owner = c.request("POST", "ConfigMap", body=_cm("owner", {}))
    c.request("POST", "ConfigMap", body=_cm("dep", {}, owner["metadata"]["uid"]))
    c.request("POST", "ConfigMap", body=_cm("other", {}, "some-other-uid"))
    c.request("DELETE", "ConfigMap", "owner")
    left = {o["metadata"]["name"] for o in cluster.objects("ConfigMap") if o["metadata"]["namespace"] == "gc"}
    assert left == {"other"}


def test_forbidden_and_dry_run_store_nothing(cluster):
    c = cluster.client(namespace="deny")
    cluster.emulator.forbidden.add(("create", "services"))
    try:
        with pytest.raises(Exception) as info:
            c.request("POST", "Service", body={"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
        assert "forbidden" in str(info.value)
    finally:
        cluster.emulator.forbidden.clear()
    c.request("POST", "ConfigMap", body=_cm("dry", {}), query={"dryRun": "All"})
    assert not [o for o in cluster.objects() if o["metadata"].get("namespace") == "deny"]
