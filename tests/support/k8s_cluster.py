"""Kubernetes test helpers: the API emulator (bench/k8s_emulator.py, shared with the CLI benchmark), a kubeconfig
pointing at it and a minimal job spec."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.k8s_emulator import ClusterEmulator, FakeCluster, make_pod  # noqa: F401 - re-exported for test modules


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "alice", "user": {"token": "t0ken"}}],
        "contexts": [
            {"name": "other", "context": {"cluster": "fake", "user": "alice", "namespace": "elsewhere"}},
            {"name": "fake-ml", "context": {"cluster": "fake", "user": "alice", "namespace": "ml"}},
        ],
        "current-context": "other",
    }))
    return path


def write_spec(path: Path, **resources) -> Path:
    path.write_text(yaml.safe_dump({"name": "cifar", "resources": {"gpus": 1, **resources}}))
    return path
