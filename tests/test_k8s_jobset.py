"""The JobSet backend (k8s/jobset.py): schema-valid against the vendored JobSet CRD, the Indexed Job's pod template,
the whole-group failure policy, and TF_CONFIG from the environment JobSet's pods get."""

from __future__ import annotations

import copy
import re

import kubernetes_validate
import pytest

from jobs.spec import SpecError, parse_spec
from jobs.tf_config import tf_config_from_env
from k8s import common, jobset
from k8s.common import ManifestError
from k8s.manifests import build_job_objects, find_job
from tests.support import crds

RUN_ID = "20261202-120000"
BASE = {"name": "cifar-dist", "distribution": {"backend": "jobset"}, "resources": {"workers": 2, "gpus": 4}}


def spec(**resources):
    data = copy.deepcopy(BASE)
    data["resources"].update(resources)
    return parse_spec(data)


def render(**resources):
    return jobset.build_jobset_objects(spec(**resources), run_id=RUN_ID, namespace="ml")


def the_jobset(objects):
    (js,) = [o for o in objects if o["kind"] == "JobSet"]
    return js


# ------------------------------------------------------------------------------------------- the objects
@pytest.mark.parametrize("resources", [
    {"workers": 2, "gpus": 4},
    {"workers": 64, "gpus": 0, "backoff_limit": 0},
    {"workers": 8, "gpus": 8, "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
     "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
     "active_deadline_seconds": 3600},
], ids=["2x4gpu", "64-workers", "selector-tolerations"])
def test_rendered_jobset_is_valid_for_the_jobset_crd(resources):
    js = the_jobset(render(**resources))
    crds.validate(js)
    # The child Job template is a batch/v1 JobSpec: validate it with Kubernetes' own schema too (strict).
    rjob = js["spec"]["replicatedJobs"][0]["template"]
    child = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "cifar-dist-worker-0"}, "spec": rjob["spec"]}
    kubernetes_validate.validate(child, kubernetes_validate.latest_version(), strict=True)


def test_crd_validation_can_fail_and_names_the_path():
    js = the_jobset(render())
    js["spec"]["failurePolicy"]["restartStrategy"] = "RestartAll"
    js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True
    js["spec"]["replicatedJobs"][0]["replicas"] = "1"
    found = "\n".join(crds.problems(js))
    assert "spec.failurePolicy.restartStrategy: 'RestartAll' is not one of" in found
    assert "containers[0]: Additional properties are not allowed ('readOnlyRootFS' was unexpected)" in found
    assert "spec.replicatedJobs[0].replicas: '1' is not of type 'integer'" in found
    with pytest.raises(AssertionError, match="JobSet 'cifar-dist' is not valid for its CRD"):
        crds.validate(js)


def test_the_crds_cel_rules_run_on_the_rendered_jobset():
    js = the_jobset(render())
    assert crds.unevaluated_rules(js) == []  # every create-time rule of the JobSet CRD was evaluated, and passed
    js["spec"]["startupPolicy"] = {"startupPolicyOrder": "InOrder"}
    js["spec"]["replicatedJobs"][0]["dependsOn"] = [{"name": "worker", "status": "Ready"}]
    assert "spec: StartupPolicy and DependsOn APIs are mutually exclusive" in "\n".join(crds.problems(js))


def test_one_replicated_job_of_n_workers_with_jobsets_own_service():
    objects = render(workers=4)
    assert [o["kind"] for o in objects] == ["ConfigMap", "JobSet"]  # JobSet makes the headless Service itself
    js = the_jobset(objects)
    assert js["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert js["spec"]["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True,
                                     "subdomain": "cifar-dist"}
    (rjob,) = js["spec"]["replicatedJobs"]
    assert rjob["name"] == jobset.REPLICATED_JOB and rjob["replicas"] == 1
    job_spec = rjob["template"]["spec"]
    assert job_spec["completionMode"] == "Indexed"
    assert job_spec["completions"] == job_spec["parallelism"] == 4
    assert job_spec["template"]["spec"]["subdomain"] == js["spec"]["network"]["subdomain"]


@pytest.mark.parametrize("backoff_limit", [0, 3, 7])
def test_failure_policy_restarts_the_whole_group_up_to_the_limit(backoff_limit):
    js = the_jobset(render(backoff_limit=backoff_limit))
    policy = js["spec"]["failurePolicy"]
    assert policy["maxRestarts"] == backoff_limit
    assert policy["restartStrategy"] == "BlockingRecreate"  # old pods gone before new ones: no duplicate index
    # The first failed pod fails the child Job, so JobSet restarts every worker; no Job-level retries.
    assert js["spec"]["replicatedJobs"][0]["template"]["spec"]["backoffLimit"] == 0
    # Failures a restart cannot fix end the JobSet at once.
    assert policy["rules"] == [{"name": "fail_at_once", "action": "FailJobSet",
                                "onJobFailureReasons": ["PodFailurePolicy", "DeadlineExceeded"]}]


def test_same_pod_template_labels_and_security_as_the_indexed_job():
    s = spec(workers=3)
    job = find_job(build_job_objects(s, run_id=RUN_ID, namespace="ml"))
    js = the_jobset(jobset.build_jobset_objects(s, run_id=RUN_ID, namespace="ml"))
    child = js["spec"]["replicatedJobs"][0]["template"]
    assert js["metadata"] == job["metadata"]
    assert child["metadata"]["labels"] == job["metadata"]["labels"]
    pod, job_pod = child["spec"]["template"], job["spec"]["template"]
    assert pod["metadata"] == job_pod["metadata"]
    env = pod["spec"]["containers"][0].pop("env")
    job_env = job_pod["spec"]["containers"][0].pop("env")
    assert pod["spec"] == job_pod["spec"]  # security context, volumes, resources, tolerations: one source
    assert env[:len(job_env)] == job_env  # the Indexed Job's contract, then JobSet's own variables
    assert [e["name"] for e in env[len(job_env):]] == [
        "JOBSET_NAME", "JOBSET_REPLICATED_JOB", "JOBSET_JOB_INDEX", "JOBCTL_PODS_PER_JOB"]
    for key in ("podFailurePolicy", "podReplacementPolicy", "activeDeadlineSeconds"):
        assert child["spec"][key] == job["spec"][key]
    assert "ttlSecondsAfterFinished" not in child["spec"] and js["spec"]["ttlSecondsAfterFinished"] > 0
    assert js["metadata"]["labels"][common.LABEL_JOB] == "cifar-dist"


def test_build_objects_follows_the_backend():
    assert [o["kind"] for o in jobset.build_objects(spec(), run_id=RUN_ID)] == ["ConfigMap", "JobSet"]
    data = copy.deepcopy(BASE)
    data["distribution"]["backend"] = "job"
    assert [o["kind"] for o in jobset.build_objects(parse_spec(data), run_id=RUN_ID)] == ["ConfigMap", "Service", "Job"]


# ------------------------------------------------------------------------------------------- TF_CONFIG
def _resolve(env_list: list[dict], pod: dict) -> dict[str, str]:
    """What the kubelet gives the container: values, and fieldRefs resolved against the pod (downward API)."""
    out = {}
    for item in env_list:
        if "value" in item:
            out[item["name"]] = item["value"]
            continue
        path = item["valueFrom"]["fieldRef"]["fieldPath"]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        out[item["name"]] = pod["metadata"][match[1]][match[2]] if match else pod["metadata"][path.split(".")[1]]
    return out


def _pod_as_jobset_makes_it(js: dict, job_index: int, pod_index: int) -> dict:
    """Names, annotations and env as the JobSet controller and the Job controller set them (jobset v0.12.0)."""
    name = js["metadata"]["name"]
    job_name = f"{name}-{jobset.REPLICATED_JOB}-{job_index}"
    annotations = {jobset.LABEL_JOBSET_NAME: name, jobset.LABEL_REPLICATED_JOB: jobset.REPLICATED_JOB,
                   jobset.LABEL_JOB_INDEX: str(job_index), "batch.kubernetes.io/job-completion-index": str(pod_index)}
    return {"metadata": {"name": f"{job_name}-{pod_index}-x7k2p", "namespace": "ml", "annotations": annotations,
                         "labels": dict(annotations)}}


@pytest.mark.parametrize("workers", [2, 5])
def test_tf_config_from_the_jobset_environment(workers):
    js = the_jobset(render(workers=workers))
    container = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"][0]["containerPort"]
    seen = []
    for pod_index in range(workers):
        pod = _pod_as_jobset_makes_it(js, 0, pod_index)
        env = _resolve(container["env"], pod)
        env["JOB_COMPLETION_INDEX"] = str(pod_index)  # Kubernetes sets it in every Indexed Job pod
        cfg = tf_config_from_env(env)
        seen.append(cfg["task"]["index"])
        # JobSet's DNS: <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>, the Service in namespace ml.
        assert cfg["cluster"]["worker"] == [f"cifar-dist-worker-0-{i}.cifar-dist.ml.svc:{port}" for i in range(workers)]
    assert seen == list(range(workers))


# ------------------------------------------------------------------------------------------- bad input
def test_jobset_with_one_worker_is_a_spec_error():
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "solo", "distribution": {"backend": "jobset"}})
    assert "distribution.backend 'jobset' runs a group of workers, but resources.workers=1" in str(info.value)


def test_unknown_backend_names_the_choices():
    with pytest.raises(SpecError, match=r"distribution.backend: expected 'job' or 'jobset'; received 'jobsets'"):
        parse_spec({"name": "x", "distribution": {"backend": "jobsets"}, "resources": {"workers": 2}})


def test_name_too_long_for_jobset_pod_names():
    long_name = "a" * 46  # fine for the Indexed Job (52), not for <name>-worker-0-<i>-xxxxx with 64 workers
    s = parse_spec({"name": long_name, "distribution": {"backend": "jobset"}, "resources": {"workers": 64}})
    with pytest.raises(ManifestError) as info:
        jobset.build_jobset_objects(s, run_id=RUN_ID)
    text = str(info.value)
    assert "cannot run as a JobSet: 1 problem" in text
    assert "with 64 workers the name can have at most 45 characters, received 'aaaa" in text
    assert len(jobset.longest_pod_name("a" * 45, 64)) == 63
    jobset.build_jobset_objects(s, run_id=RUN_ID, name="a" * 45)


def test_jobset_and_kubernetes_problems_are_reported_together():
    s = parse_spec({"name": "9" + "a" * 50, "distribution": {"backend": "jobset"}, "resources": {"workers": 2}})
    with pytest.raises(ManifestError) as info:
        jobset.build_jobset_objects(s, run_id=RUN_ID)
    text = str(info.value)
    assert "Service names must start with a letter" in text
    assert "and as a JobSet:" in text and "the name can have at most" in text


# ------------------------------------------------------------------------------------------- status (pure)
def _status(js: dict, **status) -> dict:
    js = copy.deepcopy(js)
    js["status"] = status
    return js


@pytest.mark.parametrize("status, state, message", [
    ({}, "Pending", ""),
    ({"replicatedJobsStatus": [{"name": "worker", "active": 1, "ready": 0, "succeeded": 0, "failed": 0}]}, "Running", ""),
    ({"restarts": 1, "replicatedJobsStatus": [{"name": "worker", "active": 1}]}, "Running", "group restart 1 of at most 3"),
    ({"conditions": [{"type": "Completed", "status": "True", "reason": "AllJobsCompleted",
                      "message": "jobset completed successfully"}], "terminalState": "Completed"},
     "Succeeded", "AllJobsCompleted: jobset completed successfully"),
    ({"restarts": 3, "conditions": [{"type": "Failed", "status": "True", "reason": "ReachedMaxRestarts",
                                     "message": "jobset failed due to reaching max number of restarts"}]},
     "Failed", "ReachedMaxRestarts: jobset failed due to reaching max number of restarts"),
    ({"conditions": [{"type": "Suspended", "status": "True", "reason": "SuspendedJobs", "message": "jobset is suspended"}]},
     "Suspended", "SuspendedJobs: jobset is suspended"),
])
def test_jobset_state_in_jobctls_words(status, state, message):
    from k8s.backends import jobset_state

    js = the_jobset(render(backoff_limit=3))
    assert jobset_state(_status(js, **status)) == (state, message)


def test_summary_counts_workers_and_orders_pods_by_worker_index():
    from k8s.backends import summarize_jobset

    js = the_jobset(render(workers=3))
    pods = []
    for i in (2, 0, 1):
        pod = _pod_as_jobset_makes_it(js, 0, i)
        pod["status"] = {"phase": "Running" if i else "Succeeded"}
        pods.append(pod)
    report = summarize_jobset(_status(js, replicatedJobsStatus=[{"name": "worker", "active": 1}]), pods)
    assert report.workers == 3
    assert [p.index for p in report.pods] == [0, 1, 2]
    assert (report.active, report.succeeded, report.failed) == (2, 1, 0)
    assert report.state == "Running" and report.name == "cifar-dist"


def test_a_suspended_job_becomes_a_suspended_jobset():
    job = find_job(build_job_objects(spec(), run_id=RUN_ID))
    job["spec"]["suspend"] = True  # how a queue-managed Job is rendered
    js = jobset.jobset_from_job(job, max_restarts=2, ttl_seconds_after_finished=60)
    assert js["spec"]["suspend"] is True
    assert "suspend" not in js["spec"]["replicatedJobs"][0]["template"]["spec"]
    crds.validate(js)


def test_jobset_pods_are_the_ones_the_training_network_policy_admits():
    import yaml
    from pathlib import Path

    policy = yaml.safe_load((Path(__file__).resolve().parents[1] / "k8s" / "base" / "networkpolicy.yaml").read_text())
    wanted = policy["spec"]["podSelector"]["matchLabels"]
    pod_labels = the_jobset(render())["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]["labels"]
    assert wanted.items() <= pod_labels.items()
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 2222}]


def test_a_queued_jobset_is_one_suspended_workload_for_kueue():
    from k8s.kueue import QUEUE_LABEL

    js = the_jobset(render(queue="team-a", gpu_type="NVIDIA-H100-80GB-HBM3"))
    crds.validate(js)
    assert js["metadata"]["labels"][QUEUE_LABEL] == "team-a" and js["spec"]["suspend"] is True  # Kueue admits
    child = js["spec"]["replicatedJobs"][0]["template"]
    assert QUEUE_LABEL not in child["metadata"]["labels"]  # the child Job is not a second Workload
    assert QUEUE_LABEL not in child["spec"]["template"]["metadata"]["labels"]
    assert child["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


@pytest.mark.parametrize("resources", [{"workers": 2}, {"workers": 64, "gpus": 0}])
def test_what_jobsets_webhook_checks_beyond_the_schema(resources):
    from tests.support.jobset_controller import webhook_problems

    assert webhook_problems(the_jobset(render(**resources))) == []
    longest = jobset.build_jobset_objects(spec(workers=64), run_id=RUN_ID, name="a" * 45)[-1]
    assert webhook_problems(longest) == []  # the longest name jobctl accepts for 64 workers
    bad = the_jobset(render())
    bad["spec"]["failurePolicy"]["rules"][0]["name"] = "fail-at-once"  # hyphens: refused by the webhook
    assert webhook_problems(bad) == ["invalid failure policy rule name 'fail-at-once'"]
