"""The one transport to the Kubernetes API that `submit`, `status`, `logs`, `cancel`, sweeps and `deploy` share.

Uses the official `kubernetes` client for configuration, auth and transport, but sends and receives plain JSON
dicts through its generic `ApiClient` layer instead of the typed models: what the manifest builders render is
byte-for-byte what the API server receives, and newer API fields (or CRDs such as Kueue's) are never dropped by a
model that predates them. Every request has a connect and a read timeout; every error becomes one KubeError whose
message says what to do, a 403 naming the RBAC rule that is missing and the Role of k8s/base that grants it.

The ApiClient is created lazily, on the first request (building a client never touches the network or files), or
injected (tests aim it at the KMock emulator, xmanager-style).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Mapping, Optional, Union

from k8s import common
from k8s.config import DEFAULT_NAMESPACE, load_api_client
from k8s.errors import (
    ApiMissingError,
    ApiUnreachableError,
    ConflictError,
    ForbiddenError,
    InvalidNameError,
    KubeError,
    NotFoundError,
)

# kind -> (path prefix, plural, API group)
RESOURCES = {
    "ConfigMap": ("/api/v1", "configmaps", ""),
    "Service": ("/api/v1", "services", ""),
    "Pod": ("/api/v1", "pods", ""),
    "Job": ("/apis/batch/v1", "jobs", "batch"),
    "JobSet": ("/apis/jobset.x-k8s.io/v1alpha2", "jobsets", "jobset.x-k8s.io"),  # distribution.backend: jobset
    "Deployment": ("/apis/apps/v1", "deployments", "apps"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", "policy"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", "autoscaling"),
    "InferenceService": ("/apis/serving.kserve.io/v1beta1", "inferenceservices", "serving.kserve.io"),  # --format kserve
    # Kueue (kueue.x-k8s.io): the Workload it creates for each queued Job, and the on-demand visibility API
    # that answers "pending workloads of a LocalQueue" (subresource pendingworkloads).
    "Workload": ("/apis/kueue.x-k8s.io/v1beta1", "workloads", "kueue.x-k8s.io"),
    "LocalQueueVisibility": ("/apis/visibility.kueue.x-k8s.io/v1beta1", "localqueues", "visibility.kueue.x-k8s.io"),
}

# Built-in kinds take a strategic merge patch (lists merged by key); custom resources only a JSON merge patch.
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"


def rbac_verb(method: str, name: Optional[str]) -> str:
    method = method.upper()
    if method == "GET":
        return "get" if name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())


def forbidden_message(verb: str, group: str, resource: str, namespace: str, server_message: str = "",
                      role: str = "jobctl-submitter", commands: str = "jobctl's training commands") -> str:
    who = ""
    if 'User "' in server_message:
        who = server_message.split('User "', 1)[1].split('"', 1)[0]
    actor = f'user "{who}"' if who else "you"
    return (
        f'forbidden: {actor} cannot {verb} "{resource}" (API group "{group}") in namespace "{namespace}".\n'
        f'The RBAC rule missing: {{apiGroups: ["{group}"], resources: ["{resource}"], verbs: ["{verb}"]}}.\n'
        f"The Role {role} in k8s/base/rbac.yaml grants every permission {commands} need: "
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


def label_selector(selector: Union[None, str, Mapping[str, str]]) -> Optional[str]:
    if selector is None or isinstance(selector, str):
        return selector or None
    return ",".join(f"{k}={v}" for k, v in selector.items()) or None


def short_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason or exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "NameResolution" in text:
        return "host name does not resolve"
    return text[:200]


class KubeTransport:
    """Requests on one namespace. `api_client` may be injected (tests, sweeps); otherwise it is created on first
    use from `context`/`kubeconfig` or the in-cluster service account. `role` and `commands` name, in a 403's
    message, the Role of k8s/base that grants what this client sends."""

    role = "jobctl-submitter"
    commands = "jobctl's training commands"

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
                self._namespace = DEFAULT_NAMESPACE

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

    # ---- requests
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
        # The object a failure is about: the URL's name, or the name of the object being created.
        target = name or ((body.get("metadata") or {}).get("name") if isinstance(body, dict) else None)
        try:
            resp = api.call_api(method_, url, header_params=headers, body=body_, post_params=post, _request_timeout=timeout)
        except (urllib3.exceptions.HTTPError, OSError, ApiException) as exc:
            if isinstance(exc, ApiException) and exc.status:
                raise self._api_error(method, kind, name, subresource, exc.status, exc.body or "", target) from None
            raise ApiUnreachableError(
                f"cannot reach the Kubernetes API at {self.host} ({short_reason(exc)}); gave up after "
                f"{self.connect_timeout:g}s to connect / {timeout[1] or 'no'}s to answer. Check the kubeconfig "
                "context (--context), VPN or proxy, and `kubectl cluster-info`."
            ) from None
        if not 200 <= resp.status < 300:
            data = resp.read()
            raise self._api_error(method, kind, name, subresource, resp.status, data.decode("utf-8", "replace"), target)
        if stream:
            return resp.response
        data = resp.read()
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError:
            return {"raw": data.decode("utf-8", "replace")}

    def _api_error(self, method, kind, name, subresource, status: int, text: str, target=None) -> KubeError:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = {"message": text.strip()[:500]}
        if not isinstance(payload, dict):
            payload = {"message": text.strip()[:500]}
        message = payload.get("message") or text.strip()[:500]
        reason = payload.get("reason")
        prefix, plural, group = RESOURCES[kind]
        resource = f"{plural}/{subresource}" if subresource else plural
        target = target or name
        what = f"{kind} {target!r}" if target else kind + "s"
        verb = rbac_verb(method, name)
        if status == 403:
            return ForbiddenError(
                forbidden_message(verb, group, resource, self.namespace, message, self.role, self.commands),
                status=403, reason=reason,
            )
        if status == 401:
            return KubeError(f"unauthorized: the API server rejected the credentials of the kubeconfig ({message})", status=401)
        if status == 404:
            if payload.get("kind") != "Status":  # not the API server's answer: a proxy, a wrong URL, a missing API
                if group and group not in ("", "batch", "apps", "policy", "autoscaling"):
                    return ApiMissingError(
                        f"{verb} {what}: the API {prefix.removeprefix('/apis/')} ({resource}) is not served by the "
                        f"cluster at {self.host}; expected it installed (`kubectl api-resources | grep "
                        f"{group}`)", status=404)
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
        return KubeError(f"{verb} {what} in namespace {self.namespace!r}: {message} (HTTP {status}"
                         + (f" {reason})" if reason else ")"), status=status, reason=reason)

    # ---- objects
    def get(self, kind: str, name: str) -> dict:
        return self.request("GET", kind, name)

    def list_objects(self, kind: str, selector=None) -> list[dict]:
        data = self.request("GET", kind, query={"labelSelector": label_selector(selector)})
        return list(data.get("items") or [])

    def create(self, obj: dict, *, dry_run: bool = False) -> dict:
        return self.request("POST", obj["kind"], body=obj, query={"dryRun": "All"} if dry_run else None)

    def patch(self, kind: str, name: str, changes: dict) -> dict:
        content_type = MERGE_PATCH if "." in RESOURCES[kind][2] else STRATEGIC_MERGE
        return self.request("PATCH", kind, name, body=changes, content_type=content_type)

    def delete_object(self, kind: str, name: str, propagation: str = "Background", missing_ok: bool = True) -> bool:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            self.request("DELETE", kind, name, body=body)
            return True
        except NotFoundError:
            if not missing_ok:
                raise
            return False

    def rollback(self, created: list[dict]) -> list[str]:
        """Delete `created` in reverse order; returns kind/name of what could not be deleted."""
        left = []
        for obj in reversed(created):
            kind, obj_name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
            if kind not in RESOURCES or not obj_name:
                continue
            try:
                self.delete_object(kind, obj_name, propagation="Background")
            except KubeError:
                left.append(f"{kind.lower()}/{obj_name}")
        return left
