"""A Kubernetes API for tests: KMock's KubernetesEmulator over real HTTP, on a background asyncio thread.

The official `kubernetes` client (inside k8s.client.JobClient) talks to it like to any API server. KMock stores
objects as JSON and leaves the server-side behaviour to the test; this subclass adds, as the real API server does:
uids, creation timestamps and the Job selector on create; server-side dry run; labelSelector on list; garbage
collection of dependents through ownerReferences on delete; RBAC 403s and injected failures that, like real ones,
store nothing; and pod logs (plain or followed streams) scripted per pod.
Tests and bench/bench_cli.py (the `jobctl status` start-up figure) import `FakeCluster` and `make_pod`; it lives in
bench/ because bench may not import tests/, while tests may import bench. tests/test_k8s_harness.py checks the
emulation itself.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import threading
import uuid
from typing import Any, Optional

import aiohttp.web
import attrs
import kmock

from k8s.client import INDEX_ANNOTATION, JobClient
from k8s.transport import RESOURCES, rbac_verb

_RESOURCE = {kind: kmock.resource(group, prefix.rsplit("/", 1)[-1], plural) for kind, (prefix, plural, group) in RESOURCES.items()}
_BY_PLURAL = {plural: kind for kind, (_, plural, _) in RESOURCES.items()}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _match(labels: dict, selector: Optional[str]) -> bool:
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    user: str = "alice@example.com"
    forbidden: set = attrs.field(factory=set)  # {(verb, "resource[/sub]")}
    failures: dict = attrs.field(factory=dict)  # {(verb, "resource"): (status, reason, message)}
    pod_logs: dict = attrs.field(factory=dict)  # pod name -> (list of lines, seconds between lines when followed)
    # Kueue's visibility API: LocalQueue name -> names of its pending Workloads, in order (absent: no such queue)
    pending_workloads: dict = attrs.field(factory=dict)
    # API groups this cluster does not serve (no CRD, no aggregated API): a real API server answers their paths
    # with a plain-text 404, not a Status.
    unserved_groups: set = attrs.field(factory=set)
    _versions: Any = attrs.field(factory=lambda: itertools.count(1000))

    async def _handle(self, request):
        group = request.url.path.split("/")[2] if request.url.path.startswith("/apis/") else ""
        if group in self.unserved_groups:
            return aiohttp.web.Response(status=404, text="404 page not found\n", content_type="text/plain")
        if request.resource is not None and request.resource.plural in _BY_PLURAL:
            plural = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            verb = rbac_verb(str(request.method.value if hasattr(request.method, "value") else request.method), request.name)
            if (verb, plural) in self.forbidden:
                group = request.resource.group
                raise kmock.KubernetesError(
                    status=403, reason="Forbidden",
                    message=f'{plural} is forbidden: User "{self.user}" cannot {verb} resource "{plural}" '
                    f'in API group "{group}" in the namespace "{request.namespace}"',
                    details={"kind": plural, "group": group},
                )
            if (verb, plural) in self.failures:
                status, reason, message = self.failures[(verb, plural)]
                raise kmock.KubernetesError(status=status, reason=reason, message=message)
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                self._default(request)
                if request.params.get("dryRun") == "All":
                    key = (request.resource, request.namespace, request.data["metadata"]["name"])
                    if key in self._objects and not self._objects[key].deleted:
                        raise kmock.KubernetesError(status=409, reason="AlreadyExists", message="already exists")
                    return aiohttp.web.json_response(request.data, status=201)
            if request.action == kmock.action.DELETE and request.name:
                key = (request.resource, request.namespace, request.name)
                uid = None
                if key in self._objects and not self._objects[key].deleted:
                    uid = self._objects[key].raw.get("metadata", {}).get("uid")
                response = await super()._handle(request)
                if uid:
                    await self._collect_dependents(uid)
                return response
        return await super()._handle(request)

    def _default(self, request) -> None:
        data = request.data
        meta = data.setdefault("metadata", {})
        meta.setdefault("namespace", request.namespace)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["resourceVersion"] = str(next(self._versions))
        if request.resource.plural == "jobs":  # what the Job API defaults, as in a real cluster
            sel = {"batch.kubernetes.io/controller-uid": meta["uid"]}
            data.setdefault("spec", {}).setdefault("selector", {"matchLabels": sel})
            tmeta = data["spec"].setdefault("template", {}).setdefault("metadata", {})
            tmeta.setdefault("labels", {}).update(dict(sel, **{"batch.kubernetes.io/job-name": meta["name"]}))

    async def _collect_dependents(self, uid: str) -> None:
        async with self._lock:
            for key, obj in list(self._objects.items()):
                if not obj.deleted and any(
                    o.get("uid") == uid for o in obj.raw.get("metadata", {}).get("ownerReferences") or []
                ):
                    obj.delete()

    async def _serve_list(self, request):
        payload = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        payload["items"] = [i for i in payload["items"] if _match(i.get("metadata", {}).get("labels") or {}, selector)]
        return payload

    async def serve_log(self, request):
        if request.name not in self.pod_logs:
            raise kmock.KubernetesError(
                status=400, reason="BadRequest",
                message=f'container "trainer" in pod "{request.name}" is waiting to start: ContainerCreating',
            )
        lines, delay = self.pod_logs[request.name]
        tail = request.params.get("tailLines")
        if tail:
            lines = lines[-int(tail):]
        if request.params.get("follow") != "true":
            return "".join(f"{line}\n" for line in lines).encode()

        async def stream():
            for line in lines:
                yield f"{line}\n".encode()
                await asyncio.sleep(delay)

        return stream()


    async def serve_pending_workloads(self, request):
        """visibility.kueue.x-k8s.io/v1beta1 PendingWorkloadsSummary, as Kueue's visibility server answers."""
        queue = request.name
        if queue not in self.pending_workloads:
            raise kmock.KubernetesError(status=404, reason="NotFound",
                                        message=f'localqueues.kueue.x-k8s.io "{queue}" not found')
        items = [
            {"metadata": {"name": name, "namespace": request.namespace, "creationTimestamp": _now()},
             "priority": 0, "localQueueName": queue, "positionInClusterQueue": i, "positionInLocalQueue": i}
            for i, name in enumerate(self.pending_workloads[queue])
        ]
        return {"kind": "PendingWorkloadsSummary", "apiVersion": "visibility.kueue.x-k8s.io/v1beta1",
                "metadata": {}, "items": items}


class FakeCluster:
    """Start with `with FakeCluster() as cluster:`; `cluster.client()` is a JobClient aimed at it.
    `kueue=False`: a cluster without Kueue (its Workload and visibility APIs are not served)."""

    KUEUE_KINDS = ("Workload", "LocalQueueVisibility")

    def __init__(self, namespace: str = "ml", *, kueue: bool = True):
        self.namespace = namespace
        self.kueue = kueue
        self.emulator = ClusterEmulator()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: Optional[asyncio.Event] = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        emu = self.emulator
        for kind, res in _RESOURCE.items():
            if self.kueue or kind not in self.KUEUE_KINDS:
                emu.resources[res] = {}
        if not self.kueue:
            emu.unserved_groups |= {"kueue.x-k8s.io", "visibility.kueue.x-k8s.io"}
        emu["get", _RESOURCE["Pod"], kmock.subresource("log")] << emu.serve_log
        if self.kueue:
            emu["get", _RESOURCE["LocalQueueVisibility"], kmock.subresource("pendingworkloads")] \
                << emu.serve_pending_workloads
        async with emu, kmock.Server(emu) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> "FakeCluster":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the KMock server did not start in 10 s")
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # ---- the client under test
    def api_client(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.retries = 0
        return client.ApiClient(cfg)

    def client(self, **kwargs) -> JobClient:
        kwargs.setdefault("poll_interval", 0.02)
        kwargs.setdefault("read_timeout", 5.0)
        return JobClient(kwargs.pop("namespace", self.namespace), api_client=self.api_client(), **kwargs)

    # ---- state, read and scripted from the test thread (under the emulator's lock, on its loop)
    def _call(self, fn):
        async def locked():
            async with self.emulator._lock:
                return fn()

        return asyncio.run_coroutine_threadsafe(locked(), self.loop).result(10)

    def objects(self, kind: Optional[str] = None) -> list[dict]:
        def collect():
            out = []
            for (res, _, _), obj in self.emulator.objects.items():
                if not obj.deleted and (kind is None or res == _RESOURCE[kind]):
                    out.append(copy.deepcopy(obj.raw))
            return out

        return self._call(collect)

    def names(self) -> set[tuple[str, str]]:
        return {(o.get("kind") or "?", o["metadata"]["name"]) for o in self.objects()}

    def put(self, kind: str, obj: dict) -> None:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", self.namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        key = (_RESOURCE[kind], meta["namespace"], meta["name"])

        def store():
            objs = self.emulator.objects
            if key in objs and not objs[key].deleted:
                objs[key].delete()
            if key in objs:
                objs[key].create(obj)
            else:
                objs[key] = obj

        self._call(store)

    def delete_stored(self, kind: str, name: str) -> None:
        """Remove an object as a controller would (no API request, so nothing is recorded as sent by jobctl)."""
        key = (_RESOURCE[kind], self.namespace, name)
        self._call(lambda: self.emulator.objects[key].delete())

    def patch(self, kind: str, name: str, changes: dict) -> None:
        key = (_RESOURCE[kind], self.namespace, name)
        self._call(lambda: self.emulator.objects[key].patch(changes))

    def set_logs(self, pod: str, lines: list[str], delay: float = 0.0) -> None:
        self.emulator.pod_logs[pod] = (list(lines), delay)

    def requests(self) -> list[tuple[str, str, dict]]:
        return [
            (str(getattr(r.method, "value", r.method)).upper(), r.url.path, dict(r.params))
            for r in list(self.emulator)
        ]


def make_pod(
    job: dict,
    index: int = 0,
    *,
    suffix: str = "abcde",
    phase: str = "Running",
    state: Optional[dict] = None,
    conditions: Optional[list] = None,
    node: Optional[str] = "gpu-node-1",
    restarts: int = 0,
    created: Optional[str] = None,
) -> dict:
    """A pod as the Job controller creates it for `job` (as stored, with its uid and selector)."""
    meta = job["metadata"]
    template = job["spec"]["template"]
    container = template["spec"]["containers"][0]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{index}-{suffix}",
            "namespace": meta.get("namespace"),
            "labels": dict(template["metadata"]["labels"], **{INDEX_ANNOTATION: str(index)}),
            "annotations": {INDEX_ANNOTATION: str(index)},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"], "controller": True}],
            "creationTimestamp": created or _now(),
        },
        "spec": copy.deepcopy(template["spec"]),
        "status": {"phase": phase, "conditions": conditions or []},
    }
    if node:
        pod["spec"]["nodeName"] = node
    if state is not None:
        pod["status"]["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container["image"],
                "restartCount": restarts,
                "ready": phase == "Running",
                "state": state or {},
                "lastState": {},
            }
        ]
    return pod
