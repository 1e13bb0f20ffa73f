"""Files the Kubernetes CLI tests hand to jobctl: a kubeconfig aimed at the emulator (bench/k8s_emulator.py), a spec."""

from __future__ import annotations

from pathlib import Path

import yaml


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
