"""Cluster configuration: a kubeconfig (files merged as kubectl merges them, a context, its namespace) or the
in-cluster service account. Only this module reads configuration; clients get an ApiClient from it lazily, on their
first request, or have one injected (tests, sweeps)."""

from __future__ import annotations

import os
from typing import Optional

from k8s.errors import ConfigurationError

# Where Kubernetes mounts a pod's service account (token, ca.crt, namespace); a module constant for tests.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_NAMESPACE = "default"


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
            raise ConfigurationError(
                f"kubeconfig {path!r} does not exist; expected a kubeconfig file (see `kubectl config view`)")
        try:
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
            contexts, active = config.list_kube_config_contexts(config_file=path)
        except config.ConfigException as exc:
            raise ConfigurationError(f"kubeconfig {path!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - not YAML, or YAML of the wrong shape: the client has no own error
            raise ConfigurationError(
                f"kubeconfig {path!r} is not a valid kubeconfig ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); expected the YAML `kubectl config view` prints"
            ) from None
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
            raise ConfigurationError(f"in-cluster configuration failed: {exc}") from None
        ns_file = os.path.join(sa, "namespace")
        if os.path.exists(ns_file):
            with open(ns_file) as f:
                namespace = f.read().strip() or None
    else:
        raise ConfigurationError(
            f"no Kubernetes configuration: {path!r} does not exist and this is not a pod "
            "(KUBERNETES_SERVICE_HOST unset); expected --kubeconfig, $KUBECONFIG or ~/.kube/config"
        )
    # Fail fast when the API is down: one retry; connect and read timeouts are set on every request.
    cfg.retries = 1
    return client.ApiClient(cfg), namespace


def context_namespace(*, context: Optional[str] = None, kubeconfig: Optional[str] = None) -> str:
    """The namespace a kubeconfig context names, else 'default'; for commands that only render (no cluster needed),
    an unusable configuration also means 'default'."""
    try:
        return load_api_client(context=context, kubeconfig=kubeconfig)[1] or DEFAULT_NAMESPACE
    except ConfigurationError:
        return DEFAULT_NAMESPACE
