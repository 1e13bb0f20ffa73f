"""`jobctl deploy`: the stock TF Serving image on an exported model, on Kubernetes (docs/serving.md, Deploying).

The manifests are pure functions (k8s/serving_manifests.py); applying them goes through the same transport as the
training commands (k8s/deploy.py). Errors are raised, and cli.main maps them to their message and exit code.
Nothing here imports TensorFlow or, for --dry-run and -o, contacts a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import check_output_dir, console, write_manifests_or_exit
from jobs.errors import BadInputError


def version_labels(pairs: Optional[list[str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs or []:
        label, sep, version = pair.partition("=")
        if not sep or not label or not version.isdigit():
            raise BadInputError(f"--label expects LABEL=VERSION (e.g. stable=3), received {pair!r}")
        out[label] = int(version)
    return out


def deploy(
    base_path: str = typer.Argument(..., help="model base path under the artifacts dir, or gs:// / s3:// URI"),
    replicas: int = typer.Option(2, "--replicas", min=1),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the manifests, create nothing"),
    output_dir: Optional[Path] = typer.Option(None, "-o", "--output-dir", help="write one YAML per object here"),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="default: the base path's last component"),
    name: Optional[str] = typer.Option(None, "--name", help="Deployment/Service name (default: <model>-serving)"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n",
                                            help="default: the kubeconfig context's namespace, else 'default'"),
    image: Optional[str] = typer.Option(None, "--image",
                                        help="built from Dockerfile.serve (default: jobctl-serve:<jobctl version>)"),
    artifacts_dir: str = typer.Option("artifacts", "--artifacts-dir", help="local path the artifacts PVC holds"),
    pvc: str = typer.Option("jobctl-artifacts", "--pvc", help="artifacts PersistentVolumeClaim"),
    object_store_secret: Optional[str] = typer.Option(None, "--object-store-secret",
                                                      help="Secret with credentials env for gs:// or s3:// URIs"),
    headless: bool = typer.Option(False, "--headless", help="also a headless Service for client round-robin"),
    hpa_max: Optional[int] = typer.Option(None, "--hpa-max", min=1, help="add an HPA scaling up to N replicas"),
    hpa_cpu: int = typer.Option(70, "--hpa-cpu", min=1, max=100, help="HPA target CPU utilization %"),
    cpu: str = typer.Option("1", "--cpu"),
    memory: str = typer.Option("1Gi", "--memory"),
    batching: bool = typer.Option(True, "--enable-batching/--no-batching"),
    label: Optional[list[str]] = typer.Option(None, "--label", help="version label LABEL=VERSION (repeat)"),
    output_format: str = typer.Option("deployment", "--format",
                                      help="deployment: the stock TF Serving image as a Deployment and Services; "
                                           "kserve: one KServe InferenceService (TensorFlow runtime)"),
    grpc: bool = typer.Option(False, "--grpc", help="kserve: expose gRPC (the runtime's port 9000) instead of REST"),
    service_account: Optional[str] = typer.Option(
        None, "--service-account", help="kserve: service account whose Secret KServe's storage initializer reads"),
    runtime_version: Optional[str] = typer.Option(
        None, "--runtime-version", help="kserve: tensorflow/serving release (default 2.21.0, the one Dockerfile.serve uses)"),
    gpus: int = typer.Option(0, "--gpus", help="kserve: GPUs per replica (nvidia.com/gpu; TF Serving's -gpu build)"),
    gpu_type: Optional[str] = typer.Option(
        None, "--gpu-type", help="kserve: GPU model as the nodes' --gpu-label names it (e.g. NVIDIA-L4); a nodeSelector"),
    gpu_label: Optional[str] = typer.Option(
        None, "--gpu-label", help="kserve: node label naming the GPU model (default nvidia.com/gpu.product; "
                                  "cloud.google.com/gke-accelerator on GKE)"),
    poll_seconds: int = typer.Option(30, "--poll-seconds", min=1,
                                     help="how often TF Serving (and, for s3://, the copy sidecar) looks for new versions"),
    s3_copy_image: Optional[str] = typer.Option(None, "--s3-copy-image",
                                                help="s3://: the image with the AWS CLI that copies the model in"),
    context: Optional[str] = typer.Option(None, "--context", help="kubeconfig context"),
    kubeconfig: Optional[str] = typer.Option(None, "--kubeconfig",
                                             help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)"),
) -> None:
    """Deployment + Service (+ headless Service, HPA) running the stock TF Serving image on BASE_PATH, or with
    --format kserve one KServe InferenceService."""
    from k8s.deploy import DeployClient, apply
    from k8s.serving_manifests import DeployOptions, build_manifests, to_yaml

    kserve_only = {"--grpc": grpc, "--service-account": service_account is not None,
                   "--runtime-version": runtime_version is not None, "--gpus": gpus != 0,
                   "--gpu-type": gpu_type is not None, "--gpu-label": gpu_label is not None}
    deployment_only = {"--headless": headless, "--image": image is not None, "--label": bool(label),
                       "--object-store-secret": object_store_secret is not None, "--s3-copy-image": s3_copy_image is not None,
                       "--no-batching": not batching}
    if output_format not in ("deployment", "kserve"):
        raise BadInputError(f"--format: expected 'deployment' or 'kserve', received {output_format!r}")
    wrong = [flag for flag, given in (kserve_only if output_format == "deployment" else deployment_only).items() if given]
    if wrong:
        other = "kserve" if output_format == "deployment" else "deployment"
        raise BadInputError(f"{', '.join(wrong)}: appl{'ies' if len(wrong) == 1 else 'y'} to --format {other}, not "
                            f"--format {output_format}" + ("; KServe reads credentials through --service-account"
                                                            if "--object-store-secret" in wrong else "")
                            + ("; the Deployment's image is TF Serving's CPU build (use --format kserve for GPUs)"
                               if "--gpus" in wrong or "--gpu-type" in wrong else ""))

    if output_dir:
        check_output_dir(output_dir, "-o/--output-dir")
    render_only = dry_run or output_dir is not None
    client = None
    if namespace is None:  # as the training commands: the context's namespace
        if render_only:  # nothing to talk to: an unusable configuration means 'default'
            from k8s.config import context_namespace

            namespace = context_namespace(context=context, kubeconfig=kubeconfig)
        else:
            client = DeployClient(context=context, kubeconfig=kubeconfig)
            namespace = client.namespace  # reads the configuration now: a missing kubeconfig fails here
    opts = DeployOptions(
        base_path=base_path, model_name=model_name, name=name, namespace=namespace, replicas=replicas,
        artifacts_dir=artifacts_dir, pvc=pvc, object_store_secret=object_store_secret,
        headless=headless, hpa_max_replicas=hpa_max, hpa_cpu_percent=hpa_cpu, cpu=cpu, memory=memory,
        batching=batching, version_labels=version_labels(label), poll_seconds=poll_seconds,
        **({"image": image} if image is not None else {}),
        **({"s3_copy_image": s3_copy_image} if s3_copy_image is not None else {}),
    )
    if output_format == "kserve":
        from k8s.kserve import RUNTIME_VERSION, from_deploy_options

        objects = [from_deploy_options(opts, grpc=grpc, service_account=service_account,
                                       runtime_version=runtime_version or RUNTIME_VERSION, gpus=gpus,
                                       gpu_type=gpu_type, **({"gpu_label": gpu_label} if gpu_label else {}))]
    else:
        objects = build_manifests(opts)
    if output_dir:
        write_manifests_or_exit(objects, output_dir, "-o/--output-dir")
    if dry_run and not output_dir:
        print(to_yaml(objects), end="")
    if render_only:
        return
    for line in apply(objects, client=client, context=context, kubeconfig=kubeconfig):
        console.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
