"""Talk to a cluster about jobctl Jobs: submit (with rollback), status, list, logs, wait, delete.

Uses the official `kubernetes` client for configuration (kubeconfig with a context, or in-cluster), auth and
transport, but sends and receives plain JSON dicts through its generic `ApiClient` layer instead of the typed
models: what `k8s.manifests` renders is byte-for-byte what the API server receives, and newer API fields are
never dropped by a model that predates them.

The client is created lazily, on the first request: building a `JobClient` never touches the network or files.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Union

from jobs import exit_codes
from k8s import common
from k8s.manifests import GPU_RESOURCE, TRAINER_CONTAINER, find_job, spec_configmap_name

# kind -> (path prefix, plural, API group)
RESOURCES = {
    "ConfigMap": ("/api/v1", "configmaps", ""),
    "Service": ("/api/v1", "services", ""),
    "Job": ("/apis/batch/v1", "jobs", "batch"),
    "Pod": ("/api/v1", "pods", ""),
}

# Every (verb, API group, resource) a JobClient request can need; k8s/base/rbac.yaml grants exactly these
# (plus read-only verbs for kubectl users). tests/test_k8s_base.py keeps the two in step.
REQUIRED_PERMISSIONS = (
    ("create", "batch", "jobs"),
    ("get", "batch", "jobs"),
    ("list", "batch", "jobs"),
    ("patch", "batch", "jobs"),
    ("delete", "batch", "jobs"),
    ("create", "", "configmaps"),
    ("get", "", "configmaps"),
    ("delete", "", "configmaps"),
    ("create", "", "services"),
    ("get", "", "services"),
    ("delete", "", "services"),
    ("list", "", "pods"),
    ("get", "", "pods/log"),
)

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# Where Kubernetes mounts a pod's service account (token, ca.crt, namespace); a module constant for tests.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TERMINAL = ("Succeeded", "Failed")


# ------------------------------------------------------------------------------------------------ errors
# Marks, in `submit(dry_run=True, replace=True)`'s answer, an object that exists and that the real run replaces.
WOULD_REPLACE = "jobctl.io/would-replace"


class KubeError(Exception):
    """A Kubernetes request failed; `str()` says what, why, and what to do."""

    def __init__(self, message: str, *, status: Optional[int] = None, reason: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class BadArgumentError(KubeError):
    """An argument no request can satisfy (the CLI exits 2, not 1)."""


class InvalidNameError(BadArgumentError):
    """A name that no Kubernetes object can have. Never sent: an empty one would address the whole collection
    (a DELETE of it deletes every Job in the namespace)."""


class ApiUnreachableError(KubeError):
    pass


class ForbiddenError(KubeError):
    pass


class ConflictError(KubeError):
    pass


class NotFoundError(KubeError):
    pass


class RollbackError(KubeError):
    """A create failed and so did removing what had been created; `left_behind` lists kind/name."""

    def __init__(self, message: str, left_behind: list[str]):
        super().__init__(message)
        self.left_behind = left_behind


def rbac_verb(method: str, name: Optional[str]) -> str:
    method = method.upper()
    if method == "GET":
        return "get" if name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())


def forbidden_message(verb: str, group: str, resource: str, namespace: str, server_message: str = "") -> str:
    who = ""
    if 'User "' in server_message:
        who = server_message.split('User "', 1)[1].split('"', 1)[0]
    actor = f'user "{who}"' if who else "you"
    return (
        f'forbidden: {actor} cannot {verb} "{resource}" (API group "{group}") in namespace "{namespace}".\n'
        f'The RBAC rule missing: {{apiGroups: ["{group}"], resources: ["{resource}"], verbs: ["{verb}"]}}.\n'
        f"The Role jobctl-submitter in k8s/base/rbac.yaml grants every permission jobctl's training commands need: "
        f"`kubectl apply -k k8s/base -n {namespace}` and bind it to {actor} (docs/kubernetes.md, Permissions)."
        + (f"\nAPI server: {server_message}" if server_message else "")
    )


def check_object_name(name: str, what: str) -> str:
    """`name` when it can name a Kubernetes object (a DNS-1123 subdomain); InvalidNameError otherwise."""
    if not isinstance(name, str) or not name or len(name) > 253 or not common.DNS1123_SUBDOMAIN.fullmatch(name):
        raise InvalidNameError(
            f"{what}: expected a Kubernetes object name (lower-case letters, digits, '-' and '.', starting and "
            f"ending with a letter or digit, 1 to 253 characters), received {name!r}"
        )
    return name


# ----------------------------------------------------------------------------------------- configuration
def load_api_client(
    *,
    context: Optional[str] = None,
    kubeconfig: Optional[str] = None,
):
    """(ApiClient, namespace from the config) from a kubeconfig (optionally a context) or the in-cluster service
    account. In-cluster is used only when no kubeconfig is given or found and KUBERNETES_SERVICE_HOST is set."""
    from kubernetes import client, config

    cfg = client.Configuration()
    # $KUBECONFIG may list several files, merged as kubectl merges them (the client's KubeConfigMerger does).
    path = kubeconfig or os.environ.get("KUBECONFIG", "") or os.path.expanduser("~/.kube/config")
    files = [f for f in path.split(os.pathsep) if f] if not kubeconfig else [kubeconfig]
    namespace = None
    if kubeconfig or context or any(os.path.exists(f) for f in files):
        if not any(os.path.exists(f) for f in files):
            raise KubeError(f"kubeconfig {path!r} does not exist; expected a kubeconfig file (see `kubectl config view`)")
        try:
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
            contexts, active = config.list_kube_config_contexts(config_file=path)
        except config.ConfigException as exc:
            raise KubeError(f"kubeconfig {path!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - not YAML, or YAML of the wrong shape: the client has no own error
            raise KubeError(f"kubeconfig {path!r} is not a valid kubeconfig ({exc.__class__.__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); expected the YAML `kubectl config "
                            "view` prints") from None
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        namespace = (chosen or {}).get("context", {}).get("namespace")
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        from kubernetes.config.incluster_config import InClusterConfigLoader

        sa = SERVICE_ACCOUNT_DIR
        try:
            InClusterConfigLoader(
                token_filename=os.path.join(sa, "token"), cert_filename=os.path.join(sa, "ca.crt")
            ).load_and_set(cfg)
        except config.ConfigException as exc:
            raise KubeError(f"in-cluster configuration failed: {exc}") from None
        ns_file = os.path.join(sa, "namespace")
        if os.path.exists(ns_file):
            with open(ns_file) as f:
                namespace = f.read().strip() or None
    else:
        raise KubeError(
            f"no Kubernetes configuration: {path!r} does not exist and this is not a pod "
            "(KUBERNETES_SERVICE_HOST unset); expected --kubeconfig, $KUBECONFIG or ~/.kube/config"
        )
    # Fail fast when the API is down: one retry; connect and read timeouts are set on every request.
    cfg.retries = 1
    return client.ApiClient(cfg), namespace


# --------------------------------------------------------------------------------------------- reports
@dataclass
class PodReport:
    name: str
    index: Optional[int]
    phase: str
    node: str
    restarts: int
    state: str  # one word: Pending, Unschedulable, ImagePullBackOff, Running, OOMKilled, Failed, Succeeded, ...
    detail: str = ""  # the message users need: the scheduler's words, the pull error, the exit code's meaning
    exit_code: Optional[int] = None
    created: str = ""


@dataclass
class JobReport:
    name: str
    namespace: str
    state: str  # Pending, Running, Succeeded, Failed, Suspended
    workers: int
    active: int
    succeeded: int
    failed: int
    conditions: list[dict] = field(default_factory=list)
    pods: list[PodReport] = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    created: str = ""
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def job_state(job: Mapping) -> tuple[str, str]:
    """(state, message) from the Job's conditions; Complete/Failed are final."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    # FailureTarget (1.31+) is set before the pods are terminated, Failed after.
    for kind, state in (("Complete", "Succeeded"), ("Failed", "Failed"), ("Suspended", "Suspended"),
                        ("FailureTarget", "Failed")):
        if kind in conditions:
            c = conditions[kind]
            return state, ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
    if "SuccessCriteriaMet" in conditions:
        return "Succeeded", ""
    if (status.get("active") or 0) > 0:
        return "Running", ""
    return "Pending", ""


def job_workers(job: Mapping) -> int:
    """How many workers (indexed pods) a jobctl Job runs: its completions."""
    return int((job.get("spec") or {}).get("completions") or 1)


def pod_index(pod: Mapping) -> Optional[int]:
    meta = pod.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(INDEX_ANNOTATION) or (meta.get("labels") or {}).get(INDEX_ANNOTATION)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _limits(pod: Mapping) -> dict:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == TRAINER_CONTAINER:
            return (c.get("resources") or {}).get("limits") or {}
    return {}


def _scheduling_hint(message: str, pod: Mapping) -> str:
    limits = _limits(pod)
    hints = []
    if "Insufficient " + GPU_RESOURCE in message:
        hints.append(
            f"no node has {limits.get(GPU_RESOURCE, '?')} free GPUs: lower resources.gpus, wait for GPUs to free up, "
            "or add GPU nodes"
        )
    if "Insufficient memory" in message or "Insufficient cpu" in message:
        hints.append(f"no node has cpu={limits.get('cpu', '?')} memory={limits.get('memory', '?')} free")
    if "node affinity/selector" in message or "didn't match Pod's node affinity" in message:
        hints.append("no node carries the labels of resources.node_selector")
    if "untolerated taint" in message or "had taint" in message:
        hints.append("the fitting nodes are tainted: add resources.tolerations")
    if "unbound immediate PersistentVolumeClaims" in message or "persistentvolumeclaim" in message.lower():
        hints.append("the artifacts PersistentVolumeClaim is missing or unbound: `kubectl apply -k k8s/base`")
    return ("; ".join(hints) + ". ") if hints else ""


def explain_pod(pod: Mapping) -> PodReport:
    """Turn a pod's status into the one reason a user is hunting for. Pure."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    statuses = status.get("containerStatuses") or []
    trainer = next((s for s in statuses if s.get("name") == TRAINER_CONTAINER), statuses[0] if statuses else {})
    report = PodReport(
        name=meta.get("name", "?"),
        index=pod_index(pod),
        phase=phase,
        node=spec.get("nodeName") or "-",
        restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
        state=phase,
        created=meta.get("creationTimestamp") or "",
    )
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    state = trainer.get("state") or {}
    last = (trainer.get("lastState") or {}).get("terminated")
    terminated = state.get("terminated") or last
    waiting = state.get("waiting")

    if meta.get("deletionTimestamp"):
        report.state, report.detail = "Terminating", "the pod is being deleted"
    if status.get("reason") == "Evicted" or conditions.get("DisruptionTarget", {}).get("status") == "True":
        c = conditions.get("DisruptionTarget", {})
        report.state = status.get("reason") or c.get("reason") or "Disrupted"
        report.detail = (status.get("message") or c.get("message") or "") + " (not counted against backoffLimit)"
        return report
    sched = conditions.get("PodScheduled")
    if phase == "Pending" and sched and sched.get("status") == "False":
        message = sched.get("message") or ""
        report.state = sched.get("reason") or "Unschedulable"
        report.detail = _scheduling_hint(message, pod) + f"Scheduler: {message}".strip()
        return report
    if waiting:
        reason = waiting.get("reason") or "Waiting"
        report.state = reason
        message = waiting.get("message") or ""
        if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"):
            image = trainer.get("image") or next((c.get("image") for c in spec.get("containers") or []), "?")
            report.detail = (
                f"image {image} cannot be pulled: check resources.image (or --image), that it was pushed "
                f"(`make image`), and the registry credentials. {message}"
            ).strip()
        elif reason == "ContainerCreating":
            report.detail = message or "pulling the image and mounting volumes"
        else:
            report.detail = message
        return report
    if terminated:
        code = terminated.get("exitCode")
        report.exit_code = code
        reason = terminated.get("reason") or ""
        if reason == "OOMKilled":
            limit = _limits(pod).get("memory", "?")
            report.state = "OOMKilled"
            report.detail = (
                f"the trainer used more than its memory limit ({limit}); raise resources.memory or lower "
                "training.batch_size (/dev/shm counts against it too)"
            )
        elif code == 0:
            report.state = "Succeeded" if phase == "Succeeded" else "Completed"
        else:
            report.state = "Failed" if phase == "Failed" else (reason or "Error")
            meaning = exit_codes.DESCRIPTIONS.get(code) if code is not None else None
            report.detail = f"exit code {code}" + (f" ({meaning})" if meaning else "") + (f" [{reason}]" if reason and reason != "Error" else "")
            tail = (terminated.get("message") or "").strip()
            if tail:
                report.detail += ": " + " | ".join(tail.splitlines()[-3:])[-400:]
        if last and not state.get("terminated") and state.get("running"):
            report.state = "Running"
            report.detail = "restarted after " + report.detail
        return report
    if state.get("running"):
        report.state = "Running"
    return report


def summarize_job(job: Mapping, pods: list[Mapping] = ()) -> JobReport:
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    state, message = job_state(job)
    if spec.get("suspend") and state in ("Pending", "Running"):
        state = "Suspended"
    reports = sorted(
        (explain_pod(p) for p in pods),
        key=lambda r: (r.index if r.index is not None else -1, r.created, r.name),
    )
    return JobReport(
        name=meta.get("name", "?"),
        namespace=meta.get("namespace") or "",
        state=state,
        workers=int(spec.get("completions") or spec.get("parallelism") or 1),
        active=int(status.get("active") or 0),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        conditions=[
            {k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime") if c.get(k) is not None}
            for c in status.get("conditions") or []
        ],
        pods=reports,
        labels=dict(meta.get("labels") or {}),
        created=meta.get("creationTimestamp") or "",
        message=message,
    )


def label_selector(selector: Union[None, str, Mapping[str, str]]) -> Optional[str]:
    if selector is None or isinstance(selector, str):
        return selector or None
    return ",".join(f"{k}={v}" for k, v in selector.items()) or None


# ---------------------------------------------------------------------------------------------- client
class JobClient:
    """jobctl's operations on one namespace. `api_client` may be injected (tests, sweeps); otherwise it is
    created on first use from `context`/`kubeconfig` or the in-cluster service account."""

    def __init__(
        self,
        namespace: Optional[str] = None,
        *,
        api_client=None,
        context: Optional[str] = None,
        kubeconfig: Optional[str] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        poll_interval: float = 2.0,
    ):
        self._namespace = namespace
        self._api = api_client
        self._context = context
        self._kubeconfig = kubeconfig
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.poll_interval = poll_interval
        self._lock = threading.Lock()

    # ---- lazy configuration
    def _ensure(self) -> None:
        with self._lock:
            if self._api is None:
                api, ns = load_api_client(context=self._context, kubeconfig=self._kubeconfig)
                self._api = api
                if self._namespace is None:
                    self._namespace = ns
            if self._namespace is None:
                self._namespace = "default"

    @property
    def api(self):
        self._ensure()
        return self._api

    @property
    def namespace(self) -> str:
        self._ensure()
        return self._namespace

    @property
    def host(self) -> str:
        return getattr(getattr(self._api, "configuration", None), "host", "?")

    # ---- transport
    def _path(self, kind: str, name: Optional[str] = None, subresource: Optional[str] = None) -> str:
        prefix, plural, _ = RESOURCES[kind]
        path = f"{prefix}/namespaces/{self.namespace}/{plural}"
        if name is not None:
            check_object_name(name, f"{kind} name")
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    def request(
        self,
        method: str,
        kind: str,
        name: Optional[str] = None,
        *,
        subresource: Optional[str] = None,
        query: Optional[Mapping[str, Any]] = None,
        body: Any = None,
        content_type: Optional[str] = None,
        stream: bool = False,
        read_timeout: Optional[float] = None,
    ):
        """One API call; returns the decoded JSON (or the raw urllib3 response when `stream`). Raises KubeError."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        api = self.api
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in (query or {}).items() if v is not None]
        method_, url, headers, body_, post = api.param_serialize(
            method=method,
            resource_path=self._path(kind, name, subresource),
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        timeout = (self.connect_timeout, read_timeout if read_timeout is not None else self.read_timeout)
        if stream and read_timeout is None:
            timeout = (self.connect_timeout, None)
        try:
            resp = api.call_api(method_, url, header_params=headers, body=body_, post_params=post, _request_timeout=timeout)
        except (urllib3.exceptions.HTTPError, OSError, ApiException) as exc:
            if isinstance(exc, ApiException) and exc.status:
                raise self._api_error(method, kind, name, subresource, exc.status, exc.body or "") from None
            raise ApiUnreachableError(
                f"cannot reach the Kubernetes API at {self.host} ({_short(exc)}); gave up after "
                f"{self.connect_timeout:g}s to connect / {timeout[1] or 'no'}s to answer. Check the kubeconfig "
                "context (--context), VPN or proxy, and `kubectl cluster-info`."
            ) from None
        if not 200 <= resp.status < 300:
            data = resp.read()
            raise self._api_error(method, kind, name, subresource, resp.status, data.decode("utf-8", "replace"))
        if stream:
            return resp.response
        data = resp.read()
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError:
            return {"raw": data.decode("utf-8", "replace")}

    def _api_error(self, method, kind, name, subresource, status: int, text: str) -> KubeError:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = {"message": text.strip()[:500]}
        message = payload.get("message") or text.strip()[:500]
        reason = payload.get("reason")
        _, plural, group = RESOURCES[kind]
        resource = f"{plural}/{subresource}" if subresource else plural
        what = f"{kind} {name!r}" if name else kind + "s"
        if status == 403:
            return ForbiddenError(
                forbidden_message(rbac_verb(method, name), group, resource, self.namespace, message),
                status=403, reason=reason,
            )
        if status == 401:
            return KubeError(f"unauthorized: the API server rejected the credentials of the kubeconfig ({message})", status=401)
        if status == 404:
            if payload.get("kind") != "Status":  # not the API server's answer: a proxy, a wrong URL
                return KubeError(f"{method} {what}: the server at {self.host} answered HTTP 404 without a Kubernetes "
                                 f"Status ({message[:200]!r}); expected a Kubernetes API server: check the kubeconfig's "
                                 "cluster server and `kubectl cluster-info`", status=404)
            if f'namespaces "{self.namespace}" not found' in message:
                return NotFoundError(f"namespace {self.namespace!r} does not exist; expected an existing namespace "
                                     "(`kubectl get namespaces`), set by -n or the kubeconfig context",
                                     status=404, reason=reason)
            return NotFoundError(f"{what} not found in namespace {self.namespace!r}", status=404, reason=reason)
        if status == 409:
            return ConflictError(f"{what} already exists in namespace {self.namespace!r}: {message}", status=409, reason=reason)
        return KubeError(f"{method} {what}: HTTP {status} {reason or ''}: {message}".replace("  ", " "), status=status, reason=reason)

    # ---- objects
    def get(self, kind: str, name: str) -> dict:
        return self.request("GET", kind, name)

    def list_objects(self, kind: str, selector=None) -> list[dict]:
        data = self.request("GET", kind, query={"labelSelector": label_selector(selector)})
        return list(data.get("items") or [])

    def _delete(self, kind: str, name: str, propagation: str = "Background", missing_ok: bool = True) -> bool:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            self.request("DELETE", kind, name, body=body)
            return True
        except NotFoundError:
            if not missing_ok:
                raise
            return False

    # ---- submit
    def submit(self, objects: list[dict], *, replace: bool = False, dry_run: bool = False) -> list[dict]:
        """Create the rendered objects so that deleting the Job removes the rest (owner references).

        The Job is created suspended, its ConfigMap and Service then point at it, and only then is it resumed:
        no pod starts before its spec exists. When any step fails, whatever was created is deleted again.
        `dry_run` asks the API server to check everything (admission, RBAC, quota, name clashes) and store nothing.
        """
        objects = [copy.deepcopy(o) for o in objects]
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = self.namespace
        job = find_job(objects)
        name = job["metadata"]["name"]
        dependents = [o for o in objects if o is not job]
        query = {"dryRun": "All"} if dry_run else None
        if replace and not dry_run:
            self._remove_existing(name, dependents)

        created: list[dict] = []
        try:
            body = copy.deepcopy(job)
            body["spec"]["suspend"] = True
            try:
                created.append(self.request("POST", "Job", body=body, query=query))
            except ConflictError:
                if dry_run and replace:  # the real run deletes it first
                    created.append({**body, WOULD_REPLACE: True})
                else:
                    raise ConflictError(
                        f"a Job named {name!r} already exists in namespace {self.namespace!r}; "
                        f"expected a new name: `jobctl submit ... --replace` deletes the old one first, or change "
                        f"`name` in the spec (or --set name=...). See it with `jobctl status {name}`.",
                        status=409,
                    ) from None
            uid = (created[0].get("metadata") or {}).get("uid")
            for dep in dependents:
                if uid:
                    dep["metadata"]["ownerReferences"] = [
                        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}
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
            if not dry_run and not job["spec"].get("suspend"):
                created[0] = self.request(
                    "PATCH", "Job", name, body={"spec": {"suspend": False}},
                    content_type="application/merge-patch+json",
                )
        except BaseException as exc:  # KeyboardInterrupt included: never leave half a job behind
            if not dry_run and created:
                left = self._rollback(created)
                if left:
                    raise RollbackError(
                        f"{exc}\nRolling back also failed; still in namespace {self.namespace!r}: "
                        + ", ".join(left) + f". Remove them with `kubectl delete {' '.join(left)} -n {self.namespace}`.",
                        left,
                    ) from exc
            raise
        return created

    def _rollback(self, created: list[dict]) -> list[str]:
        left = []
        for obj in reversed(created):
            kind, obj_name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
            if kind not in RESOURCES or not obj_name:
                continue
            try:
                self._delete(kind, obj_name, propagation="Background")
            except KubeError:
                left.append(f"{kind.lower()}/{obj_name}")
        return left

    def _remove_existing(self, name: str, dependents: list[dict], timeout: float = 120.0) -> None:
        self._delete("Job", name, propagation="Foreground")
        for dep in dependents:
            self._delete(dep["kind"], dep["metadata"]["name"])
        deadline = time.monotonic() + timeout
        while True:  # foreground deletion: the Job stays (with a deletionTimestamp) until its pods are gone
            try:
                self.get("Job", name)
            except NotFoundError:
                return
            if time.monotonic() > deadline:
                raise KubeError(f"--replace: the old Job {name!r} was still terminating after {timeout:g}s; try again")
            time.sleep(self.poll_interval)

    # ---- read
    def pods(self, job: Mapping) -> list[dict]:
        selector = ((job.get("spec") or {}).get("selector") or {}).get("matchLabels")
        if not selector:  # not yet defaulted by the API server: use the label jobctl puts on its pods
            selector = {common.LABEL_JOB: job["metadata"]["name"]}
        pods = self.list_objects("Pod", selector)
        uid = (job.get("metadata") or {}).get("uid")
        if uid:  # pods of an older Job that had the same name are not this job's
            pods = [
                p for p in pods
                if not (p.get("metadata") or {}).get("ownerReferences")
                or any(o.get("uid") == uid for o in p["metadata"]["ownerReferences"])
            ]
        return pods

    def status(self, name: str) -> JobReport:
        job = self.get("Job", name)
        return summarize_job(job, self.pods(job))

    def list(self, selector=None) -> list[JobReport]:
        """jobctl's Jobs (managed-by=jobctl) matching `selector` (a string or a dict), newest first."""
        base = f"{common.LABEL_MANAGED_BY}={common.MANAGED_BY}"
        extra = label_selector(selector)
        jobs = self.list_objects("Job", base + ("," + extra if extra else ""))
        reports = [summarize_job(j) for j in jobs]
        return sorted(reports, key=lambda r: r.created, reverse=True)

    def delete(self, name: str) -> None:
        """Delete the Job with foreground propagation (pods first), and the spec ConfigMap and Service when no
        owner reference would have them collected (e.g. manifests applied with kubectl)."""
        self._delete("Job", name, propagation="Foreground", missing_ok=False)
        for kind, obj_name in (("ConfigMap", spec_configmap_name(name)), ("Service", name)):
            try:
                obj = self.get(kind, obj_name)
            except NotFoundError:
                continue
            meta = obj.get("metadata") or {}
            if (meta.get("labels") or {}).get(common.LABEL_JOB) == name and not meta.get("ownerReferences"):
                self._delete(kind, obj_name)

    def wait(
        self, name: str, *, timeout: Optional[float] = None, on_change: Optional[Callable[[JobReport], None]] = None
    ) -> JobReport:
        """Poll until the Job succeeds or fails; returns the final report. KubeError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_state = None
        while True:
            report = summarize_job(self.get("Job", name))
            if on_change and report.state != last_state:
                on_change(report)
                last_state = report.state
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
        job = job if job is not None else self.get("Job", name)
        total = job_workers(job)
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
            idx = pod_index(pod)
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
                yield i, f"(worker {i}: no pod yet; the job is {job_state(job)[0]})"
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
                finished = job_state(self.get("Job", name))[0] in TERMINAL
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


def _short(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason or exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "NameResolution" in text:
        return "host name does not resolve"
    return text[:200]
