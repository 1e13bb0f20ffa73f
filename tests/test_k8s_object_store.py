"""s3:// models on the stock TF Serving image (k8s/object_store.py): the copy script run for real against a stand-in
`aws` command over a local directory tree, and the containers it runs in."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k8s import common
from k8s.common import ManifestError
from k8s.object_store import COPY_SCRIPT, copy_containers, local_model_dir

# A stand-in for the AWS CLI: `s3 ls` and `s3 cp --recursive` over $FAKE_S3/<bucket>/<key>; every call is logged.
FAKE_AWS = r'''#!{python}
import os, shutil, sys
args = sys.argv[1:]
with open(os.environ["AWS_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
if args[:1] == ["--endpoint-url"]:
    args = args[2:]
root = os.environ["FAKE_S3"]
local = lambda uri: os.path.join(root, uri[len("s3://"):].rstrip("/"))
if args[:2] == ["s3", "ls"]:
    if os.environ.get("FAKE_LS_FAILS"):
        sys.exit("An error occurred (ExpiredToken) when calling the ListObjectsV2 operation")
    path = local(args[2])
    if not os.path.isdir(path):
        sys.exit(1)
    for name in sorted(os.listdir(path)):
        print(f"                           PRE {name}/" if os.path.isdir(os.path.join(path, name)) else f"2026-12-02 1 {name}")
elif args[:2] == ["s3", "cp"] and "--recursive" in args:
    src, dst = [a for a in args[2:] if not a.startswith("--")]
    shutil.copytree(local(src), dst)
else:
    sys.exit(f"fake aws: unsupported {args}")
'''


@pytest.fixture()
def bucket(tmp_path):
    fake = tmp_path / "bin" / "aws"
    fake.parent.mkdir()
    fake.write_text(FAKE_AWS.replace("{python}", sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    root = tmp_path / "s3"
    (root / "models-bucket" / "models" / "ensemble").mkdir(parents=True)
    return tmp_path


def add_version(tmp_path: Path, version, content: str = "pb") -> None:
    d = tmp_path / "s3" / "models-bucket" / "models" / "ensemble" / str(version)
    (d / "variables").mkdir(parents=True)
    (d / "saved_model.pb").write_text(content)
    (d / "variables" / "variables.index").write_text(content)


def run_copy(tmp_path: Path, mode: str = "once", keep_latest: int = 1, keep_versions: str = "", extra=None, **popen):
    env = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "FAKE_S3": str(tmp_path / "s3"),
        "AWS_LOG": str(tmp_path / "aws.log"),
        "SRC": "s3://models-bucket/models/ensemble",
        "DST": str(tmp_path / "models" / "ensemble"),
        "KEEP_LATEST": str(keep_latest),
        "KEEP_VERSIONS": keep_versions,
        "POLL_SECONDS": "0.2",
        "MODE": mode,
        **(extra or {}),
    }
    if mode == "loop":
        return subprocess.Popen(["/bin/sh", "-c", COPY_SCRIPT], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(["/bin/sh", "-c", COPY_SCRIPT], env=env, capture_output=True, text=True, timeout=60)


def versions(tmp_path: Path) -> list[str]:
    d = tmp_path / "models" / "ensemble"
    return sorted((p.name for p in d.iterdir() if not p.name.startswith(".")), key=int) if d.exists() else []


def test_copies_the_newest_versions_and_the_labelled_ones(bucket):
    for v in (1, 2, 3, 10):
        add_version(bucket, v, content=f"v{v}")
    add_version(bucket, "not-a-version")  # TF Serving ignores it (serving#1250), so does the copy
    done = run_copy(bucket, keep_latest=2, keep_versions="1 7")  # 7 is not in the bucket: nothing to copy
    assert done.returncode == 0, done.stderr
    assert versions(bucket) == ["1", "3", "10"]  # numeric order: 10 is the newest, not "3"
    assert (bucket / "models" / "ensemble" / "10" / "saved_model.pb").read_text() == "v10"
    assert "copied version 10 of s3://models-bucket/models/ensemble" in done.stdout
    # Every copy lands in the staging directory first and is renamed into place: never half a version.
    copies = [line for line in (bucket / "aws.log").read_text().splitlines() if line.startswith("s3 cp")]
    assert copies and all("/models/ensemble/.staging/" in line for line in copies)


def test_a_bucket_without_versions_fails_the_init_container(bucket):
    done = run_copy(bucket)
    assert done.returncode != 0
    assert "no version directory (an integer) under s3://models-bucket/models/ensemble" in done.stderr


def test_a_second_pass_adds_new_versions_and_drops_old_ones(bucket):
    add_version(bucket, 1)
    assert run_copy(bucket).returncode == 0 and versions(bucket) == ["1"]
    add_version(bucket, 2)
    again = run_copy(bucket)
    assert again.returncode == 0 and versions(bucket) == ["2"]
    assert "removed version 1 (no longer kept)" in again.stdout


def test_the_sidecar_picks_up_a_version_written_later(bucket):
    add_version(bucket, 1)
    assert run_copy(bucket).returncode == 0
    sidecar = run_copy(bucket, mode="loop", keep_latest=2)
    try:
        add_version(bucket, 2)
        deadline = time.monotonic() + 20
        while versions(bucket) != ["1", "2"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert versions(bucket) == ["1", "2"]
        assert sidecar.poll() is None  # it keeps running
    finally:
        sidecar.terminate()
        sidecar.wait(10)


@pytest.mark.parametrize("endpoint, use_https, expected", [
    ("minio.storage:9000", None, "https://minio.storage:9000"),
    ("minio.storage:9000", "0", "http://minio.storage:9000"),
    ("http://minio.storage:9000", None, "http://minio.storage:9000"),
])
def test_tensorflows_s3_endpoint_variables_are_honoured(bucket, endpoint, use_https, expected):
    add_version(bucket, 1)
    extra = {"S3_ENDPOINT": endpoint, **({"S3_USE_HTTPS": use_https} if use_https else {})}
    assert run_copy(bucket, extra=extra).returncode == 0
    assert all(line.startswith(f"--endpoint-url {expected} s3 ") for line in (bucket / "aws.log").read_text().splitlines())


def test_containers_carry_credentials_only_by_reference():
    init, sidecars, volumes = copy_containers("s3://models-bucket/models/ensemble", "ensemble", secret="s3-creds",
                                              num_versions=2, keep_versions=[3])
    (copy,), (sync,) = init, sidecars
    for c in (copy, sync):
        assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert not any(e["name"].startswith("AWS_") for e in c["env"])
        assert c["securityContext"] == common.container_security_context(read_only_root=True)
        assert {"name": "models", "mountPath": "/models"} in c["volumeMounts"]
    env = {e["name"]: e["value"] for e in copy["env"]}
    assert env["MODE"] == "once" and {e["name"]: e["value"] for e in sync["env"]}["MODE"] == "loop"
    assert env["DST"] == local_model_dir("ensemble") == "/models/ensemble"
    assert env["KEEP_LATEST"] == "2" and env["KEEP_VERSIONS"] == "3"
    assert {v["name"] for v in volumes} == {"models", "copy-tmp"}
    no_secret, _, _ = copy_containers("s3://models-bucket/models/ensemble", "ensemble")
    assert "envFrom" not in no_secret[0]  # the default chain: IRSA, Pod Identity, the node's role


@pytest.mark.parametrize("uri", ["s3://models-bucket", "s3://B/models", "gs://bucket/m", "s3://bucket/m'; rm -rf /"])
def test_bad_s3_uris_are_refused(uri):
    with pytest.raises(ManifestError, match="BASE_PATH: expected s3://<bucket>/<path"):
        copy_containers(uri, "m")


def test_a_failed_listing_in_the_sidecar_removes_nothing(bucket):
    add_version(bucket, 1)
    assert run_copy(bucket).returncode == 0
    again = run_copy(bucket, extra={"FAKE_LS_FAILS": "1"})
    assert again.returncode != 0 and "ExpiredToken" in again.stderr  # the store's own error reaches the log
    assert versions(bucket) == ["1"]  # a transient error never unloads what TF Serving serves
