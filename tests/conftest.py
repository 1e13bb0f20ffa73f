"""Shared test settings: quiet TensorFlow, no GPU probing, modest threads (tests share 2 cores)."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture()
def cluster():
    """A fresh KMock-backed Kubernetes API in namespace "ml"; modules needing another setup define their own."""
    from tests.support.k8s_cluster import FakeCluster  # imported here so tests that never use it skip kmock/aiohttp

    with FakeCluster(namespace="ml") as c:
        yield c
