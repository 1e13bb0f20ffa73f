"""GPU types, per-GPU sizing, GPU-waste warnings, priority classes, and the one label selector for everything
jobctl creates: rendered objects asserted field by field, schema-valid, and bad input refused naming the field."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from jobs.spec import SpecError, parse_spec
from k8s import sizing
from k8s.manifests import build_job_objects, find_job

runner = CliRunner()
NEWEST = kubernetes_validate.latest_version()
SELECTOR = ("app.kubernetes.io/managed-by", "jobctl")


def pod_of(spec: dict) -> dict:
    return find_job(build_job_objects(parse_spec(spec), run_id="r1"))["spec"]["template"]["spec"]


@pytest.mark.parametrize("resources, key", [
    ({"gpu_type": "NVIDIA-H100-80GB-HBM3"}, "nvidia.com/gpu.product"),  # NVIDIA GPU feature discovery
    ({"gpu_type": "nvidia-h100-80gb", "gpu_label": "cloud.google.com/gke-accelerator"}, "cloud.google.com/gke-accelerator"),
    ({"gpu_type": "h100", "gpu_label": "example.com/gpu-model"}, "example.com/gpu-model"),
])
def test_gpu_type_selects_nodes_by_their_gpu_label(resources, key):
    pod = pod_of({"name": "a", "resources": {"gpus": 2, "node_selector": {"pool": "gpu"}, **resources}})
    assert pod["nodeSelector"] == {"pool": "gpu", key: resources["gpu_type"]}


@pytest.mark.parametrize("gpus, cpu, memory, shm", [
    (0, "2", "8Gi", "1Gi"),  # CPU jobs keep the old defaults
    (1, "8", "16Gi", "2Gi"),
    (4, "32", "64Gi", "8Gi"),  # was cpu 2, memory 8Gi for a 4-GPU pod
])
def test_cpu_memory_and_shm_default_per_gpu(gpus, cpu, memory, shm):
    pod = pod_of({"name": "a", "resources": {"gpus": gpus}})
    limits = pod["containers"][0]["resources"]["limits"]
    assert (limits["cpu"], limits["memory"]) == (cpu, memory)
    assert next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"] == shm


def test_explicit_sizes_win_over_the_per_gpu_rule():
    pod = pod_of({"name": "a", "resources": {"gpus": 4, "cpu": "12", "memory": "40Gi", "shm_size": "4Gi"}})
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "12", "memory": "40Gi"}
    assert next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"] == "4Gi"


def test_priority_class_and_everything_new_is_schema_valid():
    spec = {"name": "a", "resources": {"gpus": 4, "workers": 2, "gpu_type": "NVIDIA-H200", "queue": "team-a",
                                       "priority_class": "research-high"}}
    objects = build_job_objects(parse_spec(spec), run_id="r1")
    assert find_job(objects)["spec"]["template"]["spec"]["priorityClassName"] == "research-high"
    for obj in objects:
        kubernetes_validate.validate(obj, NEWEST, strict=True)


@pytest.mark.parametrize("spec, expected", [
    # The seeds' batch 32 on one GPU: ANCHORS.md's H200 figures for cifar10-cnn.
    ({"name": "cifar10-cnn", "resources": {"gpus": 1}}, ["a batch of 32", "20,161 images/s at batch 32 against 134,185 at batch 256 (15%)"]),
    ({"name": "digits-cnn", "resources": {"gpus": 1}}, ["digits-cnn trains at 23,311 images/s", "(12%)"]),
    # A global 512 over 2 workers x 4 GPUs: 64 each.
    ({"name": "x", "resources": {"gpus": 4, "workers": 2}, "training": {"batch_size": 512}}, ["each of the 8 GPU replicas a batch of 64"]),
    ({"name": "x", "resources": {"gpus": 4, "cpu": "2"}, "training": {"batch_size": 256, "batch_size_per": "replica"}},
     ["resources.cpu 2 for 4 GPUs", "expected cpu >= 32 (8 per GPU)"]),
])
def test_specs_that_waste_gpus_get_warnings_with_figures(spec, expected):
    text = " | ".join(sizing.gpu_waste_warnings(parse_spec(spec)))
    for needle in expected:
        assert needle in text


@pytest.mark.parametrize("spec", [
    {"name": "x"},  # no GPU, nothing to waste
    {"name": "x", "resources": {"gpus": 4}, "training": {"batch_size": 1024}},  # 256 per GPU, cores by the rule
    {"name": "x", "resources": {"gpus": 2, "cpu": "16"}, "training": {"batch_size": 256, "batch_size_per": "replica"}},
])
def test_well_sized_specs_get_no_warning(spec):
    assert sizing.gpu_waste_warnings(parse_spec(spec)) == []


def test_validate_and_render_warn_and_never_block(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "cifar10-cnn", "resources": {"gpus": 4, "cpu": "2"}}))
    for args in (["validate", str(spec)], ["render", str(spec), "-o", str(tmp_path / "out")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        assert "warning:" in r.output and "a batch of 8" in r.output and "resources.cpu 2 for 4 GPUs" in r.output


@pytest.mark.parametrize("resources, needle", [
    ({"queue": "Team_A"}, "resources.queue: expected a Kueue LocalQueue name, a DNS-1123 label"),
    ({"queue": "a" * 64}, "resources.queue: expected a Kueue LocalQueue name"),
    ({"gpu_type": "NVIDIA-H100-80GB-HBM3"}, "gpu_type 'NVIDIA-H100-80GB-HBM3' asks for nodes with that GPU, but gpus is 0"),
    ({"priority_class": "High!"}, "resources.priority_class: expected a PriorityClass name, a DNS-1123 subdomain"),
    ({"gpus": 1, "gpu_type": "H100 80GB"}, "resources.gpu_type: expected a node label value"),
    ({"gpus": 1, "gpu_type": "h100", "gpu_label": "not a label"}, "resources.gpu_label: expected a node label key"),
    ({"gpus": 1, "gpu_type": "h100", "node_selector": {"nvidia.com/gpu.product": "a100"}}, "expected one of them"),
])
def test_bad_kubernetes_fields_are_refused_naming_the_field(tmp_path, resources, needle):
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "x", "resources": resources})
    assert needle in info.value.render()
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "x", "resources": resources}))
    r = runner.invoke(app, ["validate", str(spec)])
    assert r.exit_code == 2 and needle in r.output


# ------------------------------------------------------------------------------------- one label selector
def _all_rendered_objects() -> list[dict]:
    from k8s.serving_manifests import DeployOptions, build_manifests

    objects = []
    for spec in ({"name": "one"}, {"name": "multi", "resources": {"workers": 3, "gpus": 2}},
                 {"name": "queued", "resources": {"gpus": 1, "queue": "team-a"}}):
        objects += build_job_objects(parse_spec(spec), run_id="r1")
    objects += build_manifests(DeployOptions("artifacts/models/ensemble", replicas=3, headless=True, hpa_max_replicas=6))
    return objects


def test_every_object_and_pod_jobctl_creates_carries_the_documented_label():
    objects = _all_rendered_objects()
    kinds = {o["kind"] for o in objects}
    assert kinds == {"ConfigMap", "Service", "Job", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    key, value = SELECTOR
    for obj in objects:
        assert obj["metadata"]["labels"][key] == value, obj["kind"]
        template = obj.get("spec", {}).get("template")
        if template:  # the pods the Job and Deployment controllers create
            assert template["metadata"]["labels"][key] == value, obj["kind"]


def test_the_label_selector_finds_every_object_in_the_cluster(cluster):
    """What `kubectl get ... -l app.kubernetes.io/managed-by=jobctl` does: a labelSelector list of each kind."""
    from k8s.deploy import apply
    from k8s.serving_manifests import DeployOptions, build_manifests
    from tests.support.k8s_cluster import make_pod

    client = cluster.client()
    client.submit(build_job_objects(parse_spec({"name": "multi", "resources": {"workers": 2}}), run_id="r1"))
    job = next(o for o in cluster.objects("Job"))
    cluster.put("Pod", make_pod(job, 0))
    apply(build_manifests(DeployOptions("artifacts/models/ensemble", namespace="ml", hpa_max_replicas=4)),
          api_client=cluster.api_client())
    selector = "=".join(SELECTOR)
    stored = {(o["kind"], o["metadata"]["name"]) for o in cluster.objects() if o.get("kind") not in ("Workload",)}
    found = set()
    for kind in ("ConfigMap", "Service", "Job", "Pod", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        found |= {(kind, o["metadata"]["name"]) for o in client.list_objects(kind, selector)}
    assert found == stored and len(found) == 9
