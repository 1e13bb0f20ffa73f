"""`jobctl deploy` on a cluster: create or update the serving objects (k8s/serving_manifests.py), all or nothing,
and prune what the new set no longer has; through the same transport as `submit` (k8s/transport.py): the same
timeouts, the same error messages, a 403 naming the missing RBAC rule and the jobctl-deployer Role."""

from __future__ import annotations

from typing import Optional

from k8s import common
from k8s.errors import ConflictError, KubeError, RollbackError
from k8s.serving_manifests import COMPONENT
from k8s.transport import RESOURCES, KubeTransport

# The kinds `jobctl deploy` manages, in the order prune lists them.
DEPLOY_KINDS = ("ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                "InferenceService")  # --format kserve; pruned too, so switching formats leaves nothing behind
_VERBS = ("create", "patch", "list", "delete")
# (verb, API group, resource) of every request `apply` sends: k8s/base's jobctl-deployer Role grants these.
DEPLOY_PERMISSIONS = tuple((verb, RESOURCES[kind][2], RESOURCES[kind][1]) for kind in DEPLOY_KINDS for verb in _VERBS)


class DeployClient(KubeTransport):
    """The transport with the deployer's Role named in its 403 messages."""

    role = "jobctl-deployer"
    commands = "`jobctl deploy`"


def apply(objects: list[dict], api_client=None, context: Optional[str] = None, kubeconfig: Optional[str] = None,
          prune: bool = True, client: Optional[KubeTransport] = None) -> list[str]:
    """Create each object, or patch it with the whole object when it exists (409): `jobctl deploy` twice rolls out
    the new spec. All or nothing for what this call creates: on an error, the objects it created are deleted
    again (updated ones stay updated). `prune`: objects of this deployment (its instance label) that the new set
    no longer has, e.g. an HPA after `--hpa-max` is dropped, are deleted once everything else is applied.

    `client` (or `api_client`, a `kubernetes.client.ApiClient`, for tests pointed at a mock server) is injected;
    otherwise created lazily from kubeconfig or the in-cluster config. The objects carry their namespace.
    """
    if not objects:
        return []
    namespace = objects[0]["metadata"]["namespace"]
    client = client or DeployClient(namespace, api_client=api_client, context=context, kubeconfig=kubeconfig)
    lines: list[str] = []
    created: list[dict] = []
    try:
        for obj in objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            try:
                client.create(obj)
                created.append(obj)
                lines.append(f"created {kind} {namespace}/{name}")
            except ConflictError:
                # The whole object as a strategic merge patch: fields jobctl sets are updated, server-set fields
                # (a Service's clusterIP, status) are kept.
                client.patch(kind, name, obj)
                lines.append(f"updated {kind} {namespace}/{name}")
    except KubeError as exc:
        left = client.rollback(created)
        undone = [f"{o['kind']} {o['metadata']['name']}" for o in reversed(created)
                  if f"{o['kind'].lower()}/{o['metadata']['name']}" not in left]
        message = str(exc) + (f"; rolled back what this deploy had created: {', '.join(undone)}" if undone else "")
        if left:
            raise RollbackError(f"{message}\nRolling back also failed; still in namespace {namespace!r}: "
                                + ", ".join(left), left) from None
        raise type(exc)(message, status=exc.status, reason=exc.reason) from None
    if prune:
        lines += _prune(client, objects)
    return lines


def _prune(client: KubeTransport, objects: list[dict]) -> list[str]:
    """Delete this deployment's objects (same instance label) of the kinds jobctl deploys that `objects` lacks."""
    instance = objects[0]["metadata"]["labels"][common.LABEL_INSTANCE]
    namespace = objects[0]["metadata"]["namespace"]
    wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
    selector = f"{common.LABEL_INSTANCE}={instance},{common.LABEL_COMPONENT}={COMPONENT}"
    lines = []
    for kind in DEPLOY_KINDS:
        try:
            found = client.list_objects(kind, selector)
        except KubeError:
            continue  # pruning is tidying: a kind the user may not list (or an unreachable server) is left alone
        for item in found:
            name = item["metadata"]["name"]
            if (kind, name) in wanted:
                continue
            try:
                client.delete_object(kind, name)
                lines.append(f"deleted {kind} {namespace}/{name} (no longer part of this deployment)")
            except KubeError:
                lines.append(f"could not delete {kind} {namespace}/{name}, which is no longer part of this deployment")
    return lines
