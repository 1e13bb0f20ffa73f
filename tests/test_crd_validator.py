"""tests/support/crds.py itself: the Kubernetes schema extensions it enforces, on a small schema of each kind, and
the lookup of vendored CRDs."""

from __future__ import annotations

import pytest

from tests.support import crds

SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "format": "int32", "minimum": 0},
                "port": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "mode": {"type": "string", "enum": ["A", "B"]},
                "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "extra": {"type": "object", "additionalProperties": {"type": "string"}},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "ports": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["port", "protocol"],
                    "items": {"type": "object", "properties": {"port": {"type": "integer"}, "protocol": {"type": "string"},
                                                                "name": {"type": "string"}}},
                },
                "description": {"type": "string"},  # a field named like a schema keyword stays a field
            },
        },
    },
}


def errors(spec: dict) -> list[str]:
    validator = crds.validator_for_schema(SCHEMA)
    return sorted(e.message for e in validator.iter_errors({"apiVersion": "x/v1", "kind": "X", "spec": spec}))


def test_a_valid_object_passes():
    assert errors({"size": 3, "port": "http", "note": None, "mode": "A", "config": {"anything": {"goes": 1}},
                   "extra": {"a": "b"}, "tags": ["x", "y"], "description": "kept",
                   "ports": [{"port": 80, "protocol": "TCP"}, {"port": 80, "protocol": "UDP"}]}) == []


@pytest.mark.parametrize("spec, needle", [
    ({"size": 1, "sise": 2}, "'sise' was unexpected"),                  # unknown fields are errors (strict)
    ({"size": 2**31}, "is not a 'int32'"),                             # format ranges
    ({"size": 1, "port": 1.5}, "is not valid under any of the given schemas"),
    ({"size": 1, "mode": None}, "None is not one of ['A', 'B']"),      # not nullable
    ({"size": 1, "note": 5}, "5 is not of type 'string', 'null'"),
    ({"size": 1, "extra": {"a": 1}}, "1 is not of type 'string'"),
    ({"size": 1, "tags": ["x", "x"]}, "has non-unique elements"),      # list-type set
    ({"size": 1, "ports": [{"port": 80, "protocol": "TCP", "name": "a"}, {"port": 80, "protocol": "TCP"}]},
     "items 0 and 1 have the same port, protocol [80, 'TCP']"),     # list-type map keys
    ({}, "'size' is a required property"),
])
def test_each_kubernetes_rule_is_enforced(spec, needle):
    assert any(needle in e for e in errors(spec)), errors(spec)


def test_metadata_name_and_labels_are_checked_like_the_api_server():
    obj = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
           "metadata": {"name": "Bad_Name", "labels": {"a": 1}}, "spec": {}}
    found = crds.problems(obj)
    assert "metadata.name: expected a DNS-1123 subdomain, received 'Bad_Name'" in found
    assert "metadata.labels: expected a map of strings to strings, received {'a': 1}" in found


@pytest.mark.parametrize("api_version, kind, needle", [
    ("jobset.x-k8s.io/v1", "JobSet", "serves ['v1alpha2'], not 'v1'"),
    ("example.com/v1", "Widget", "no vendored CRD for Widget in API group 'example.com'"),
    ("v1", "ConfigMap", "expected <group>/<version> of a custom resource"),
])
def test_unknown_kinds_and_versions_say_what_is_vendored(api_version, kind, needle):
    with pytest.raises(LookupError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        crds.problems({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}})


def test_vendored_crds_are_the_ones_the_readmes_list():
    readme = "".join(p.read_text() for p in crds.CRD_DIR.glob("README*.md"))  # README.md, README.kueue.md
    for path in crds.CRD_DIR.glob("*.yaml*"):
        assert f"`{path.name}`" in readme
        crd = crds.load_crd(path)
        assert crd["kind"] == "CustomResourceDefinition"


# ---------------------------------------------------------------------------------------------- CEL rules
CEL_SCHEMA = {
    "type": "object",
    "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
    "properties": {
        "min": {"type": "integer"},
        "max": {"type": "integer"},
        "name": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]},
        "tolerations": {
            "type": "array",
            "items": {"type": "object", "properties": {"key": {"type": "string"}, "operator": {"type": "string"}}},
            "x-kubernetes-validations": [
                {"rule": "self.all(x, !has(x.key) ? x.operator == 'Exists' : true)", "message": "no key needs Exists"}],
        },
        "sorted": {"type": "array", "items": {"type": "integer"},
                   "x-kubernetes-validations": [{"rule": "isSorted(self)"}]},  # Kubernetes' list library
        "strict": {"type": "object", "x-kubernetes-validations": [{"rule": "self.count > 0"}]},
    },
}


@pytest.mark.parametrize("obj, needle", [
    ({"min": 1, "max": 2}, None),
    ({"min": 3, "max": 2}, "(root): min must not exceed max (rule: self.min <= self.max)"),
    ({"min": 1, "max": 2, "tolerations": [{"key": "a", "operator": "Equal"}, {"operator": "Exists"}]}, None),
    ({"min": 1, "max": 2, "tolerations": [{"operator": "Equal"}]}, "tolerations: no key needs Exists"),
    ({"min": 1, "max": 2, "name": "x"}, None),  # transition rules (oldSelf) do not apply on create
    ({"min": 1, "max": 2, "strict": {}}, "strict: rule 'self.count > 0' cannot be evaluated (no such member"),
])
def test_cel_rules_run_where_their_value_is_present(obj, needle):
    failed, _ = crds.cel_check(CEL_SCHEMA, obj)
    if needle is None:
        assert failed == []
    else:
        assert any(needle in f for f in failed), failed


def test_rules_needing_kubernetes_cel_libraries_are_listed_not_passed_silently():
    failed, unevaluated = crds.cel_check(CEL_SCHEMA, {"min": 1, "max": 2, "sorted": [1, 2]})
    assert failed == [] and unevaluated == [("sorted", "isSorted(self)")]
