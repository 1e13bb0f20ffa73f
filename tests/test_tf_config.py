"""TF_CONFIG from the environment an Indexed Job pod gets (jobs/tf_config.py)."""

import json

import pytest

from jobs.spec import parse_spec
from k8s.manifests import build_job_objects, find_job
from jobs.tf_config import TFConfigError, tf_config_from_env

BASE = {"JOBCTL_WORKERS": "3", "JOBCTL_JOB_NAME": "cifar", "JOBCTL_SERVICE": "cifar", "JOB_COMPLETION_INDEX": "1"}


def test_worker_list_and_task_index():
    cfg = tf_config_from_env(dict(BASE, JOBCTL_NAMESPACE="ml", JOBCTL_PORT="2345"))
    assert cfg == {
        "cluster": {
            "worker": [
                "cifar-0.cifar.ml.svc:2345",
                "cifar-1.cifar.ml.svc:2345",
                "cifar-2.cifar.ml.svc:2345",
            ]
        },
        "task": {"type": "worker", "index": 1},
    }


def test_default_port_and_short_names_without_namespace():
    cfg = tf_config_from_env(BASE)
    assert cfg["cluster"]["worker"][0] == "cifar-0.cifar:2222"


@pytest.mark.parametrize("env", [{}, {"JOBCTL_WORKERS": "1", "JOB_COMPLETION_INDEX": "0"}, {"HOSTNAME": "x"}])
def test_not_multi_worker_returns_none(env):
    assert tf_config_from_env(env) is None


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"JOBCTL_WORKERS": "three"}, "JOBCTL_WORKERS: expected an integer, received 'three'"),
        ({"JOBCTL_WORKERS": "0"}, "JOBCTL_WORKERS: expected an integer between 1 and 1024, received 0"),
        ({"JOB_COMPLETION_INDEX": "3"}, "JOB_COMPLETION_INDEX: expected an integer between 0 and 2, received 3"),
        ({"JOB_COMPLETION_INDEX": "-1"}, "JOB_COMPLETION_INDEX: expected an integer between 0 and 2, received -1"),
        ({"JOB_COMPLETION_INDEX": None}, "JOB_COMPLETION_INDEX is not set"),
        ({"JOBCTL_SERVICE": "Bad_Name"}, "JOBCTL_SERVICE: expected a DNS-1123 label"),
        ({"JOBCTL_JOB_NAME": None}, "JOBCTL_JOB_NAME is not set"),
        ({"JOBCTL_PORT": "70000"}, "JOBCTL_PORT: expected an integer between 1 and 65535, received 70000"),
        ({"JOBCTL_PORT": "http"}, "JOBCTL_PORT: expected an integer, received 'http'"),
    ],
)
def test_malformed_values_name_the_variable(override, needle):
    env = {k: v for k, v in dict(BASE, **override).items() if v is not None}
    with pytest.raises(TFConfigError) as info:
        tf_config_from_env(env)
    assert needle in str(info.value)


def test_explicit_tf_config_wins_and_is_checked():
    mine = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    assert tf_config_from_env(dict(BASE, TF_CONFIG=json.dumps(mine))) == mine
    with pytest.raises(TFConfigError, match="TF_CONFIG: expected JSON"):
        tf_config_from_env({"TF_CONFIG": "{not json"})
    with pytest.raises(TFConfigError, match=r"task worker\[5\] is not in cluster"):
        tf_config_from_env({"TF_CONFIG": json.dumps(dict(mine, task={"type": "worker", "index": 5}))})


def test_matches_the_rendered_manifest_contract():
    """The env the Job sets, plus what Kubernetes adds, yields host names the headless Service resolves."""
    spec = parse_spec({"name": "mnist-dist", "resources": {"workers": 2}})
    objects = build_job_objects(spec, run_id="r1")
    job = find_job(objects)
    service = next(o for o in objects if o["kind"] == "Service")
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e}
    env["JOB_COMPLETION_INDEX"] = "0"
    env["JOBCTL_NAMESPACE"] = "team-a"  # the downward API fills this in
    cfg = tf_config_from_env(env)
    # Kubernetes names Indexed Job pod hosts <job>-<index> and puts them under <subdomain>.
    expected_domain = f"{pod['subdomain']}.team-a.svc"
    assert pod["subdomain"] == service["metadata"]["name"]
    assert cfg["cluster"]["worker"] == [
        f"{job['metadata']['name']}-{i}.{expected_domain}:{service['spec']['ports'][0]['port']}" for i in range(2)
    ]


# ---------------------------------------------------------------------------------------------- JobSet
JOBSET = {"JOBCTL_WORKERS": "4", "JOBCTL_SERVICE": "cifar", "JOBSET_NAME": "cifar", "JOBSET_REPLICATED_JOB": "worker",
          "JOBSET_JOB_INDEX": "0", "JOBCTL_PODS_PER_JOB": "4", "JOB_COMPLETION_INDEX": "2", "JOBCTL_NAMESPACE": "ml"}


def test_jobset_hosts_follow_jobsets_naming():
    cfg = tf_config_from_env(JOBSET)
    assert cfg == {
        "cluster": {"worker": [f"cifar-worker-0-{i}.cifar.ml.svc:2222" for i in range(4)]},
        "task": {"type": "worker", "index": 2},
    }


def test_jobset_with_several_child_jobs_counts_across_them():
    """Two child Jobs of two pods: worker 3 is pod 1 of job 1 (the general JobSet layout)."""
    cfg = tf_config_from_env(dict(JOBSET, JOBCTL_PODS_PER_JOB="2", JOBSET_JOB_INDEX="1", JOB_COMPLETION_INDEX="1"))
    assert cfg["task"]["index"] == 3
    assert [h.split(".")[0] for h in cfg["cluster"]["worker"]] == [
        "cifar-worker-0-0", "cifar-worker-0-1", "cifar-worker-1-0", "cifar-worker-1-1"]


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"JOBSET_JOB_INDEX": "1"}, "JOBSET_JOB_INDEX: expected an integer between 0 and 0, received 1"),
        ({"JOBSET_JOB_INDEX": None}, "JOBSET_JOB_INDEX is not set"),
        ({"JOBCTL_PODS_PER_JOB": "3"}, "JOBCTL_PODS_PER_JOB: expected a divisor of JOBCTL_WORKERS=4"),
        ({"JOBCTL_PODS_PER_JOB": "8"}, "JOBCTL_PODS_PER_JOB: expected an integer between 1 and 4, received 8"),
        ({"JOBSET_REPLICATED_JOB": None}, "JOBSET_REPLICATED_JOB is not set; expected a DNS-1123 label (set by the jobctl JobSet manifest)"),
        ({"JOBSET_REPLICATED_JOB": "Worker"}, "JOBSET_REPLICATED_JOB: expected a DNS-1123 label"),
        ({"JOB_COMPLETION_INDEX": "4"}, "JOB_COMPLETION_INDEX: expected an integer between 0 and 3, received 4"),
    ],
)
def test_malformed_jobset_values_name_the_variable(override, needle):
    env = {k: v for k, v in dict(JOBSET, **override).items() if v is not None}
    with pytest.raises(TFConfigError) as info:
        tf_config_from_env(env)
    assert needle in str(info.value)
