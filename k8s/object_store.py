"""s3:// models on the stock `tensorflow/serving` image, which has no s3 filesystem since 2.7
(tensorflow/serving#1963, open): an init container copies the model's versions from the bucket into an emptyDir,
TF Serving reads that directory, and a sidecar copies versions that appear later. Pure: containers as dicts.

    init container  model-copy   copies the newest `num_versions` versions (and the labelled ones); the pod
                                 starts serving only once they are there; fails when the bucket has no version
    sidecar         model-sync   every `poll_seconds`, copies new versions and removes those the policy no
                                 longer keeps: TF Serving's own file-system poll then loads and unloads them

Each version is copied into a staging directory on the same volume and renamed into place, so TF Serving never
sees half a version (a rename within one file system is atomic). Only these two containers get the credentials
(`envFrom` the Secret: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, optional S3_ENDPOINT); TF Serving
gets none. Without a Secret the AWS CLI's default chain applies (IRSA, EKS Pod Identity, the node's role). The
script never echoes the environment, and the AWS CLI does not print credentials.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from k8s import common
from k8s.common import ManifestError

# The AWS CLI v2 image, pinned (any image with `aws` and a POSIX shell works: --s3-copy-image).
COPY_IMAGE = "amazon/aws-cli:2.22.35"
MODELS_DIR = "/models"
VOLUME = "models"
S3_URI = re.compile(r"^s3://([a-z0-9][-a-z0-9.]{1,61}[a-z0-9])(/[^\s'\"$`\\]*)?$")

# POSIX sh; $SRC, $DST, $KEEP_LATEST, $KEEP_VERSIONS, $POLL_SECONDS, $MODE come from the container's env.
COPY_SCRIPT = r"""set -eu
STAGE="$DST/.staging"
endpoint=""
if [ -n "${S3_ENDPOINT:-}" ]; then
  case "$S3_ENDPOINT" in
    http://*|https://*) endpoint="$S3_ENDPOINT" ;;
    *) if [ "${S3_USE_HTTPS:-1}" = "0" ]; then endpoint="http://$S3_ENDPOINT"; else endpoint="https://$S3_ENDPOINT"; fi ;;
  esac
fi
s3() { if [ -n "$endpoint" ]; then aws --endpoint-url "$endpoint" s3 "$@"; else aws s3 "$@"; fi; }
wanted() {
  all=$(s3 ls "$SRC/" | awk '$1 == "PRE" { sub("/$", "", $2); print $2 }' | grep -E '^[0-9]+$' | sort -n || true)
  { printf '%s\n' "$all" | tail -n "$KEEP_LATEST"; for v in $KEEP_VERSIONS; do printf '%s\n' "$all" | grep -x "$v" || true; done; } \
    | grep -E '^[0-9]+$' | sort -nu
}
sync_once() {
  want=$(wanted)
  if [ -z "$want" ]; then echo "no version directory (an integer) under $SRC" >&2; return 1; fi
  mkdir -p "$DST" "$STAGE"
  for v in $want; do
    [ -d "$DST/$v" ] && continue
    rm -rf "$STAGE/$v"
    s3 cp --recursive --only-show-errors "$SRC/$v" "$STAGE/$v"
    mv "$STAGE/$v" "$DST/$v"
    echo "copied version $v of $SRC"
  done
  for d in "$DST"/*; do
    v=$(basename "$d")
    case "$v" in *[!0-9]*|'') continue ;; esac
    if ! printf '%s\n' $want | grep -qx "$v"; then rm -rf "$d"; echo "removed version $v (no longer kept)"; fi
  done
}
if [ "$MODE" = "once" ]; then sync_once; exit; fi
while true; do
  sleep "$POLL_SECONDS"
  sync_once || echo "copying new versions failed; trying again in $POLL_SECONDS s" >&2
done
"""


def check_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key prefix) of an s3:// model URI; ManifestError naming what is wrong."""
    m = S3_URI.fullmatch(uri.rstrip("/")) if isinstance(uri, str) else None
    if not m or not (m.group(2) or "").strip("/"):
        raise ManifestError(f"BASE_PATH: expected s3://<bucket>/<path to the model's version directories>, "
                            f"received {uri!r}")
    return m.group(1), m.group(2).strip("/")


def local_model_dir(model: str) -> str:
    """Where TF Serving reads the copied versions (models.config base_path)."""
    return f"{MODELS_DIR}/{model}"


def _env(uri: str, model: str, num_versions: int, keep_versions: Iterable[int], poll_seconds: int, mode: str) -> list:
    return [
        {"name": "SRC", "value": uri.rstrip("/")},
        {"name": "DST", "value": local_model_dir(model)},
        {"name": "KEEP_LATEST", "value": str(num_versions)},
        {"name": "KEEP_VERSIONS", "value": " ".join(str(v) for v in sorted(set(keep_versions)))},
        {"name": "POLL_SECONDS", "value": str(poll_seconds)},
        {"name": "MODE", "value": mode},
        {"name": "HOME", "value": "/tmp"},  # the AWS CLI caches under ~/.aws; the root file system is read-only
    ]


def copy_containers(
    uri: str,
    model: str,
    *,
    secret: Optional[str] = None,
    num_versions: int = 1,
    keep_versions: Iterable[int] = (),
    poll_seconds: int = 30,
    image: str = COPY_IMAGE,
    cpu: str = "100m",
    memory: str = "256Mi",
) -> tuple[list[dict], list[dict], list[dict]]:
    """(init containers, sidecar containers, volumes) that keep `uri`'s versions in local_model_dir(model).

    The caller mounts `VOLUME` read-only at MODELS_DIR in the TF Serving container and points models.config there.
    """
    check_s3_uri(uri)
    common.validate_image(image, "--s3-copy-image")
    if secret is not None:
        common.validate_dns1123(secret, "--object-store-secret", max_length=253)
    if num_versions < 1:
        raise ManifestError(f"num_versions: expected >= 1, received {num_versions}")

    def container(name: str, mode: str) -> dict:
        c: dict = {
            "name": name,
            "image": image,
            "imagePullPolicy": "IfNotPresent" if "@sha256:" in image else "Always",
            "command": ["/bin/sh", "-c", COPY_SCRIPT],
            "env": _env(uri, model, num_versions, keep_versions, poll_seconds, mode),
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
            "volumeMounts": [{"name": VOLUME, "mountPath": MODELS_DIR},
                             {"name": "copy-tmp", "mountPath": "/tmp"}],
            "securityContext": common.container_security_context(read_only_root=True),
        }
        if secret:
            c["envFrom"] = [{"secretRef": {"name": secret}}]
        return c

    volumes = [
        # Sized by the model; counts against the node's ephemeral storage like any emptyDir.
        {"name": VOLUME, "emptyDir": {}},
        {"name": "copy-tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    return [container("model-copy", "once")], [container("model-sync", "loop")], volumes
