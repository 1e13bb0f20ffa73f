"""jobctl's operations on training Jobs: submit (with rollback), status, list, logs, wait, delete.

Built on the shared transport (`k8s.transport.KubeTransport`: configuration, timeouts, error messages with the
missing RBAC rule); the reports come from the pure functions of `k8s.status`. Names other modules import from here
(errors, reports, configuration) are re-exported so that `from k8s.client import JobClient, KubeError` keeps working.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from typing import Callable, Iterator, Mapping, Optional

from k8s import backends, common, jobset, kueue
from k8s.config import SERVICE_ACCOUNT_DIR, load_api_client  # noqa: F401 - re-exported
from k8s.errors import (  # noqa: F401 - re-exported
    ApiMissingError,
    ApiUnreachableError,
    BadArgumentError,
    ConflictError,
    ForbiddenError,
    InvalidNameError,
    KubeError,
    NotFoundError,
    RollbackError,
)
from k8s.kueue import queue_name
from k8s.manifests import TRAINER_CONTAINER, spec_configmap_name
from k8s.status import (  # noqa: F401 - re-exported
    INDEX_ANNOTATION,
    TERMINAL,
    JobReport,
    PodReport,
    explain_pod,
    job_state,
    job_workers,
    pod_index,
    summarize_job,
)
from k8s.transport import (  # noqa: F401 - re-exported
    RESOURCES,
    KubeTransport,
    check_object_name,
    forbidden_message,
    label_selector,
    rbac_verb,
)

# Every (verb, API group, resource) a JobClient request can need; k8s/base/rbac.yaml grants exactly these
# (plus read-only verbs for kubectl users). tests/test_k8s_base.py keeps the two in step.
REQUIRED_PERMISSIONS = (
    ("create", "batch", "jobs"),
    ("get", "batch", "jobs"),
    ("list", "batch", "jobs"),
    ("patch", "batch", "jobs"),
    ("delete", "batch", "jobs"),
    ("create", "jobset.x-k8s.io", "jobsets"),
    ("get", "jobset.x-k8s.io", "jobsets"),
    ("list", "jobset.x-k8s.io", "jobsets"),
    ("patch", "jobset.x-k8s.io", "jobsets"),
    ("delete", "jobset.x-k8s.io", "jobsets"),
    ("create", "", "configmaps"),
    ("get", "", "configmaps"),
    ("delete", "", "configmaps"),
    ("create", "", "services"),
    ("get", "", "services"),
    ("delete", "", "services"),
    ("list", "", "pods"),
    ("get", "", "pods/log"),
    # Kueue, read only: where a queued job stands (status, list, submit --wait).
    ("list", "kueue.x-k8s.io", "workloads"),
    ("get", "visibility.kueue.x-k8s.io", "localqueues/pendingworkloads"),
)

# Marks, in `submit(dry_run=True, replace=True)`'s answer, an object that exists and that the real run replaces.
WOULD_REPLACE = "jobctl.io/would-replace"


class JobClient(KubeTransport):
    """jobctl's operations on the training Jobs of one namespace (see KubeTransport for configuration)."""

    # ---- submit
    def submit(self, objects: list[dict], *, replace: bool = False, dry_run: bool = False) -> list[dict]:
        """Create the rendered objects so that deleting the Job (or JobSet) removes the rest (owner references).

        The Job (JobSet) is created suspended, its ConfigMap and Service then point at it, and only then is it
        resumed: no pod starts before its spec exists. A job for a Kueue LocalQueue (resources.queue) stays
        suspended: Kueue resumes it when it admits its Workload; un-suspending it here would bypass the queue. When
        any step fails, whatever was created is deleted again.
        `dry_run` asks the API server to check everything (admission, RBAC, quota, name clashes) and store nothing.
        """
        objects = [copy.deepcopy(o) for o in objects]
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = self.namespace
        job = jobset.find_workload(objects)
        kind, name = job["kind"], job["metadata"]["name"]
        dependents = [o for o in objects if o is not job]
        query = {"dryRun": "All"} if dry_run else None
        if replace and not dry_run:
            self._remove_existing(kind, name, dependents)

        created: list[dict] = []
        try:
            body = copy.deepcopy(job)
            body["spec"]["suspend"] = True
            try:
                created.append(self.request("POST", kind, body=body, query=query))
            except ApiMissingError as exc:
                if kind != jobset.KIND:
                    raise
                raise ApiMissingError(
                    f"{exc}. distribution.backend 'jobset' needs the JobSet controller (kubernetes-sigs/jobset, API "
                    f"{jobset.API_VERSION}); install it (docs/kubernetes.md, Job or JobSet) or submit with "
                    "--set distribution.backend=job. Nothing was created.", status=404,
                ) from None
            except ConflictError:
                if dry_run and replace:  # the real run deletes it first
                    created.append({**body, WOULD_REPLACE: True})
                else:
                    raise ConflictError(
                        f"a {kind} named {name!r} already exists in namespace {self.namespace!r}; "
                        f"expected a new name: `jobctl submit ... --replace` deletes the old one first, or change "
                        f"`name` in the spec (or --set name=...). See it with `jobctl status {name}`.",
                        status=409,
                    ) from None
            uid = (created[0].get("metadata") or {}).get("uid")
            for dep in dependents:
                if uid:
                    dep["metadata"]["ownerReferences"] = [
                        {"apiVersion": job["apiVersion"], "kind": kind, "name": name, "uid": uid}
                    ]
                try:
                    created.append(self.request("POST", dep["kind"], body=dep, query=query))
                except ConflictError:
                    if dry_run and replace:
                        created.append({**dep, WOULD_REPLACE: True})
                        continue
                    raise ConflictError(
                        f"a {dep['kind']} named {dep['metadata']['name']!r} already exists in namespace "
                        f"{self.namespace!r} (left by an earlier job?); delete it (`kubectl delete "
                        f"{dep['kind'].lower()} {dep['metadata']['name']} -n {self.namespace}`) or use --replace",
                        status=409,
                    ) from None
            if not dry_run and not job["spec"].get("suspend") and not queue_name(job):
                created[0] = self.request(
                    "PATCH", kind, name, body={"spec": {"suspend": False}},
                    content_type="application/merge-patch+json",
                )
        except BaseException as exc:  # KeyboardInterrupt included: never leave half a job behind
            if not dry_run and created:
                left = self.rollback(created)
                if left:
                    raise RollbackError(
                        f"{exc}\nRolling back also failed; still in namespace {self.namespace!r}: "
                        + ", ".join(left) + f". Remove them with `kubectl delete {' '.join(left)} -n {self.namespace}`.",
                        left,
                    ) from exc
            raise
        return created

    def _remove_existing(self, kind: str, name: str, dependents: list[dict], timeout: float = 120.0) -> None:
        self.delete_object(kind, name, propagation="Foreground")
        for dep in dependents:
            self.delete_object(dep["kind"], dep["metadata"]["name"])
        deadline = time.monotonic() + timeout
        while True:  # foreground deletion: the Job stays (with a deletionTimestamp) until its pods are gone
            try:
                self.get(kind, name)
            except NotFoundError:
                return
            if time.monotonic() > deadline:
                raise KubeError(f"--replace: the old {kind} {name!r} was still terminating after {timeout:g}s; try again")
            time.sleep(self.poll_interval)

    # ---- read
    def workload(self, name: str) -> dict:
        """The Job named `name`, else the JobSet (distribution.backend: jobset); NotFoundError naming both."""
        try:
            return self.get("Job", name)
        except NotFoundError as job_missing:
            try:
                return self.get(jobset.KIND, name)
            except ApiMissingError:  # no JobSet controller in this cluster: it can only have been a Job
                raise job_missing from None
            except NotFoundError:
                raise NotFoundError(f"{job_missing}, nor a JobSet of that name; `jobctl list` shows jobctl's jobs",
                                    status=404) from None

    def pods(self, job: Mapping) -> list[dict]:
        """The pods of a Job or JobSet; not those of an older one that had the same name."""
        return [p for p in self.list_objects("Pod", backends.pod_selector(job)) if backends.owns_pod(job, p)]

    def status(self, name: str) -> JobReport:
        job = self.workload(name)
        report = backends.summarize(job, self.pods(job))
        if queue_name(job):
            report.queue = self.queue_report(job)
        return report

    def list(self, selector=None) -> list[JobReport]:
        """jobctl's Jobs and JobSets (managed-by=jobctl) matching `selector` (a string or a dict), newest first;
        queued ones with their Workload's state and position. A JobSet's child Job is shown as its JobSet, not
        twice; a cluster without JobSet simply has none."""
        base = f"{common.LABEL_MANAGED_BY}={common.MANAGED_BY}"
        extra = label_selector(selector)
        wanted = base + ("," + extra if extra else "")
        jobs = self.list_objects("Job", f"{wanted},!{jobset.LABEL_JOBSET_NAME}")
        try:
            jobs += self.list_objects(jobset.KIND, wanted)
        except ApiMissingError:
            pass
        reports = [backends.summarize(j) for j in jobs]
        queued = [(j, r) for j, r in zip(jobs, reports) if queue_name(j)]
        if queued:
            workloads, note = self._workloads()
            positions: dict = {}
            for job, report in queued:
                report.queue = self.queue_report(job, workloads=workloads, note=note, positions=positions)
        return sorted(reports, key=lambda r: r.created, reverse=True)
    # ---- Kueue (read-only: the Role grants list on workloads and get on the visibility API, nothing more)
    def _workloads(self, job: Optional[Mapping] = None) -> tuple[Optional[list[dict]], str]:
        """(Workloads of the namespace, or of `job`; None and a one-line reason when they cannot be read)."""
        uid = ((job or {}).get("metadata") or {}).get("uid")
        try:
            return self.list_objects("Workload", {kueue.JOB_UID_LABEL: uid} if uid else None), ""
        except ApiMissingError:
            return None, "Kueue is not installed in this cluster (no kueue.x-k8s.io Workload API)"
        except ForbiddenError:
            return None, ('forbidden to list "workloads" (API group "kueue.x-k8s.io"): the Role jobctl-submitter of '
                          "k8s/base grants it")

    def queue_report(self, job: Mapping, *, workloads: Optional[list[dict]] = None, note: str = "",
                     positions: Optional[dict] = None) -> kueue.QueueReport:
        """Where a queued Job stands: its Workload's state and reason, and its position in the LocalQueue where
        the visibility API answers (one line saying why not where it does not)."""
        queue = queue_name(job)
        if workloads is None and not note:
            workloads, note = self._workloads(job)
        if workloads is None:
            return kueue.QueueReport(queue, "unknown", position_note=note)
        report = kueue.interpret_workload(queue, kueue.workload_of(job, workloads))
        if report.workload and report.state in (kueue.PENDING, kueue.EVICTED, kueue.PREEMPTED):
            positions = {} if positions is None else positions
            if queue not in positions:
                positions[queue] = self._pending_workloads(queue)
            summary, why = positions[queue]
            if summary is not None:
                report.position = kueue.position_in(summary, report.workload)
                if report.position is None:
                    report.position_note = "not in the visibility API's pending list (being admitted or evicted)"
            else:
                report.position_note = why
        return report

    def _pending_workloads(self, queue: str) -> tuple[Optional[dict], str]:
        try:
            return self.request("GET", "LocalQueueVisibility", queue, subresource="pendingworkloads"), ""
        except ApiMissingError:
            return None, ("no position: Kueue's visibility API (visibility.kueue.x-k8s.io/v1beta1) is not served "
                          "here (Kueue before 0.9, or its visibility server is disabled)")
        except ForbiddenError:
            return None, ('no position: forbidden to get "localqueues/pendingworkloads" (API group '
                          '"visibility.kueue.x-k8s.io"); the Role jobctl-submitter of k8s/base grants it')
        except NotFoundError:
            return None, f"no position: LocalQueue {queue!r} does not exist in namespace {self.namespace!r}"

    def delete(self, name: str) -> str:
        """Delete the Job (or JobSet) with foreground propagation (pods first, and the Workload Kueue owns by it),
        and the spec ConfigMap and Service when no owner reference would have them collected (e.g. manifests
        applied with kubectl). Returns the kind deleted."""
        workload_kind = self.workload(name)["kind"]
        self.delete_object(workload_kind, name, propagation="Foreground", missing_ok=False)
        for kind, obj_name in (("ConfigMap", spec_configmap_name(name)), ("Service", name)):
            try:
                obj = self.get(kind, obj_name)
            except NotFoundError:
                continue
            meta = obj.get("metadata") or {}
            if (meta.get("labels") or {}).get(common.LABEL_JOB) == name and not meta.get("ownerReferences"):
                self.delete_object(kind, obj_name)
        return workload_kind

    def wait(
        self, name: str, *, timeout: Optional[float] = None, on_change: Optional[Callable[[JobReport], None]] = None
    ) -> JobReport:
        """Poll until the Job (JobSet) succeeds or fails; returns the final report. KubeError on timeout. `on_change`
        sees each new state; while Kueue holds the job (Queued), also each change of its Workload's state or position."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_state = None
        kind = self.workload(name)["kind"]
        while True:
            job = self.get(kind, name)
            report = backends.summarize(job)
            if on_change and report.state == "Queued":
                report.queue = self.queue_report(job)
            state = (report.state, report.queue and (report.queue.state, report.queue.position))
            if on_change and state != last_state:
                on_change(report)
                last_state = state
            if report.state in TERMINAL:
                return report
            if deadline is not None and time.monotonic() > deadline:
                raise KubeError(f"job {name!r} still {report.state} after {timeout:g}s")
            time.sleep(self.poll_interval)

    # ---- logs
    def logs(
        self,
        name: str,
        *,
        follow: bool = False,
        workers: Optional[list[int]] = None,
        tail_lines: Optional[int] = None,
        job: Optional[Mapping] = None,
    ) -> Iterator[tuple[Optional[int], str]]:
        """(worker index, line) pairs. Without `follow`: the latest pod of each worker. With `follow`: streams,
        and when a worker's pod is replaced (retry), continues with the new pod until the Job finishes.
        `workers` None: the chief; `job`: the Job object when the caller has already read it."""
        job = job if job is not None else self.workload(name)
        total = backends.workers(job)
        indices = workers if workers is not None else [0]
        for i in indices:
            if not 0 <= i < total:
                raise BadArgumentError(f"--worker {i}: job {name!r} has workers 0..{total - 1}")
        if not follow:
            yield from self._logs_once(job, indices, tail_lines)
            return
        out: "queue.Queue[tuple]" = queue.Queue()
        stop = threading.Event()
        threads = [
            threading.Thread(target=self._follow_worker, args=(job, i, out, stop, tail_lines), daemon=True)
            for i in indices
        ]
        for t in threads:
            t.start()
        done = 0
        try:
            while done < len(threads):
                item = out.get()
                if item[0] == "done":
                    done += 1
                elif item[0] == "error":
                    raise item[1]
                else:
                    yield item[1], item[2]
        finally:
            stop.set()

    def _latest_pods(self, job: Mapping) -> dict[int, dict]:
        latest: dict[int, dict] = {}
        for pod in self.pods(job):
            idx = backends.worker_of(job, pod)
            idx = 0 if idx is None else idx
            key = ((pod.get("metadata") or {}).get("creationTimestamp") or "", pod["metadata"]["name"])
            cur = latest.get(idx)
            if cur is None or key > ((cur["metadata"].get("creationTimestamp") or ""), cur["metadata"]["name"]):
                latest[idx] = pod
        return latest

    def _logs_once(self, job, indices, tail_lines) -> Iterator[tuple[Optional[int], str]]:
        latest = self._latest_pods(job)
        for i in indices:
            pod = latest.get(i)
            if pod is None:
                yield i, f"(worker {i}: no pod yet; the job is {backends.state(job)[0]})"
                continue
            if (pod.get("status") or {}).get("phase", "Pending") == "Pending":
                report = explain_pod(pod)
                yield i, f"(worker {i}: pod {pod['metadata']['name']} has not started: {report.state} {report.detail})".rstrip()
                continue
            resp = self.request(
                "GET", "Pod", pod["metadata"]["name"], subresource="log",
                query={"container": TRAINER_CONTAINER, "tailLines": tail_lines}, stream=True,
            )
            for line in _lines(resp):
                yield i, line

    def _follow_worker(self, job, index: int, out: queue.Queue, stop: threading.Event, tail_lines) -> None:
        name = job["metadata"]["name"]
        streamed: set[str] = set()
        try:
            while not stop.is_set():
                pod = self._latest_pods(job).get(index)
                finished = backends.state(self.get(job.get("kind") or "Job", name))[0] in TERMINAL
                if pod is None or pod["metadata"]["name"] in streamed:
                    if finished:
                        break
                    time.sleep(self.poll_interval)
                    continue
                phase = (pod.get("status") or {}).get("phase", "Pending")
                if phase == "Pending":
                    if finished:
                        break
                    time.sleep(self.poll_interval)
                    continue
                pod_name = pod["metadata"]["name"]
                if streamed:
                    out.put(("line", index, f"--- worker {index}: pod {pod_name} (retry {len(streamed)}) ---"))
                streamed.add(pod_name)
                resp = self.request(
                    "GET", "Pod", pod_name, subresource="log",
                    query={"container": TRAINER_CONTAINER, "follow": True, "tailLines": tail_lines}, stream=True,
                )
                try:
                    for line in _lines(resp):
                        if stop.is_set():
                            break
                        out.put(("line", index, line))
                finally:
                    resp.release_conn()
                tail_lines = None  # a replacement pod is shown from its first line
        except Exception as exc:  # surfaced in the consumer's thread
            out.put(("error", exc))
        finally:
            out.put(("done",))


def _lines(resp) -> Iterator[str]:
    buffer = b""
    for chunk in resp.stream(4096, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode("utf-8", "replace")
    if buffer:
        yield buffer.decode("utf-8", "replace")
