"""Validate a rendered custom resource against its vendored CRD's OpenAPI schema (tests/crds/, see its README).

    from tests.support import crds
    crds.validate(obj)          # AssertionError listing every problem, each with its path
    crds.problems(obj)          # the same problems as a list of strings ([] when valid)

The CRD is found by the object's apiVersion and kind among `tests/crds/<group>_<plural>.yaml[.gz]`. The schema
is checked with jsonschema (Draft 4, the dialect OpenAPI 3.0 schemas follow) after turning the Kubernetes
extensions into what the API server enforces on create:

- unknown fields are errors where the schema lists `properties` (kubectl and the server's strict field
  validation reject them; a typo must not be pruned silently), except under `x-kubernetes-preserve-unknown-fields`;
- `nullable: true` admits null; `x-kubernetes-int-or-string` admits an integer or a string;
- `x-kubernetes-list-type: map` keys (`x-kubernetes-list-map-keys`) and `set` items must be unique;
- `format: int32` / `int64` ranges;
- `metadata.name` is a DNS-1123 subdomain, labels and annotations map strings to strings.

- `x-kubernetes-validations`: each CEL rule runs (cel-python, the Python CEL implementation) with `self` bound to
  the value at its path, where that value is present, as the API server runs them on create. A false result is a
  problem with the rule's message; so is an evaluation error (the server rejects those too, e.g. a field read
  without `has()`). Transition rules (`oldSelf`) do not apply on create and are skipped; rules calling
  Kubernetes' own CEL libraries (quantity, isSorted, ...) that cel-python lacks are not run, and
  `unevaluated_rules(obj)` lists them so a test can assert there are none.
`cel_rules(api_version, kind)` lists every rule of a schema (path, rule).
"""

from __future__ import annotations

import copy
import functools
import gzip
import re
from pathlib import Path
from typing import Any, Iterator, Optional

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parent.parent / "crds"

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


# ------------------------------------------------------------------------------------------------ loading
def _read(path: Path) -> dict:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 2 s instead of 11 for KServe's CRD
    return yaml.load(raw, Loader=loader)


@functools.lru_cache(maxsize=None)
def _crd_files(group: str) -> tuple[Path, ...]:
    return tuple(sorted(p for p in CRD_DIR.iterdir()
                        if p.name.startswith(group + "_") and p.name.endswith((".yaml", ".yaml.gz"))))


@functools.lru_cache(maxsize=None)
def load_crd(path: Path) -> dict:
    crd = _read(path)
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path}: expected a CustomResourceDefinition, received kind {crd.get('kind')!r}")
    return crd


def _crd_version(api_version: str, kind: str) -> dict:
    group, _, version = api_version.rpartition("/")
    if not group:
        raise LookupError(f"apiVersion {api_version!r}: expected <group>/<version> of a custom resource")
    files = _crd_files(group)
    for path in files:
        crd = load_crd(path)
        if crd["spec"]["names"]["kind"] != kind:
            continue
        for v in crd["spec"]["versions"]:
            if v["name"] == version:
                if not v.get("served", True):
                    raise LookupError(f"{kind} {api_version}: the CRD in {path.name} does not serve {version}")
                return v
        served = [v["name"] for v in crd["spec"]["versions"] if v.get("served", True)]
        raise LookupError(f"{kind} {api_version}: the CRD in {path.name} serves {served}, not {version!r}")
    raise LookupError(f"no vendored CRD for {kind} in API group {group!r} under {CRD_DIR} "
                      f"(looked at {[p.name for p in files] or 'no files'}); see tests/crds/README.md")


# ------------------------------------------------------------------------------------ schema translation
def _translate(node: Any) -> Any:
    """Kubernetes structural schema -> JSON Schema Draft 4 with the server's create-time rules (module doc)."""
    if isinstance(node, list):
        return [_translate(n) for n in node]
    if not isinstance(node, dict):
        return node
    maps = ("properties", "patternProperties", "definitions")  # name -> schema, not schemas themselves
    out = {k: _translate(v) for k, v in node.items() if k != "description" and k not in maps}
    for key in maps:
        if isinstance(node.get(key), dict):
            out[key] = {name: _translate(sub) for name, sub in node[key].items()}
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    is_object = node.get("type") == "object"
    if is_object and "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _list_map_keys(validator, list_type, instance, schema):
    if list_type != "map" or not isinstance(instance, list):
        return
    keys = schema.get("x-kubernetes-list-map-keys") or []
    seen: dict[tuple, int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(
                f"items {seen[key]} and {i} have the same {', '.join(keys)} {list(key)!r}; "
                f"x-kubernetes-list-type map requires unique keys"
            )
        seen[key] = i


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    for name, (low, high) in _INT_RANGES.items():
        def check(value, low=low, high=high):
            return not isinstance(value, int) or isinstance(value, bool) or low <= value <= high
        checker.checks(name)(check)
    return checker


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_map_keys}
)


def validator_for_schema(openapi_schema: dict):
    """A jsonschema validator for a CRD's openAPIV3Schema with the API server's create-time rules (module doc)."""
    return _Validator(_translate(openapi_schema), format_checker=_format_checker())


@functools.lru_cache(maxsize=None)
def _validator(api_version: str, kind: str):
    return validator_for_schema(_crd_version(api_version, kind)["schema"]["openAPIV3Schema"])


# ----------------------------------------------------------------------------------------------- checks
def _path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _metadata_problems(meta: Any) -> Iterator[str]:
    if not isinstance(meta, dict):
        yield f"metadata: expected an object, received {meta!r}"
        return
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        yield f"metadata.name: expected a DNS-1123 subdomain, received {name!r}"
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is not None and not (isinstance(value, dict)
                                      and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            yield f"metadata.{field}: expected a map of strings to strings, received {value!r}"


def problems(obj: dict) -> list[str]:
    """Every way `obj` breaks its CRD's schema, as 'path: message' strings; [] when it is valid."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [f"expected apiVersion and kind strings, received {api_version!r}, {kind!r}"]
    validator = _validator(api_version, kind)
    found = list(_metadata_problems(obj.get("metadata")))
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        found.append(f"{_path(error)}: {error.message}")
    if not found:  # CEL rules assume a structurally valid object, as on the API server
        found += cel_check(_crd_version(api_version, kind)["schema"]["openAPIV3Schema"], obj)[0]
    return found


def unevaluated_rules(obj: dict) -> list[tuple[str, str]]:
    """(path, rule) of the CEL rules that apply to `obj` but call a function cel-python does not have."""
    return cel_check(_crd_version(obj["apiVersion"], obj["kind"])["schema"]["openAPIV3Schema"], obj)[1]


# ------------------------------------------------------------------------------------------------ CEL rules
@functools.lru_cache(maxsize=None)
def _cel_program(rule: str):
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_check(openapi_schema: dict, obj: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """(problems, unevaluated (path, rule)) of the CEL rules in `openapi_schema` applied to `obj` (module doc)."""
    import celpy

    failed: list[str] = []
    unevaluated: list[tuple[str, str]] = []

    def run(schema_node: dict, value: Any, path: str) -> None:
        for item in schema_node.get("x-kubernetes-validations") or []:
            rule = item.get("rule", "")
            if "oldSelf" in rule:
                continue  # a transition rule: applies to updates only
            try:
                result = _cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
            except celpy.CELEvalError as exc:
                if "undeclared reference" in str(exc.args[0] if exc.args else exc):
                    unevaluated.append((path or "(root)", rule))
                else:
                    failed.append(f"{path or '(root)'}: rule {rule!r} cannot be evaluated "
                                  f"({exc.args[0] if exc.args else exc})")
                continue
            if isinstance(result, celpy.CELEvalError):
                failed.append(f"{path or '(root)'}: rule {rule!r} cannot be evaluated ({result.args[0]})")
            elif not bool(result):
                failed.append(f"{path or '(root)'}: {item.get('message') or 'failed rule'} (rule: {rule})")

    def walk(schema_node: Any, value: Any, path: str) -> None:
        if not isinstance(schema_node, dict) or value is None:
            return
        run(schema_node, value, path)
        if isinstance(value, dict):
            props = schema_node.get("properties") or {}
            extra = schema_node.get("additionalProperties")
            for key, sub in value.items():
                if key in props:
                    walk(props[key], sub, f"{path}.{key}" if path else key)
                elif isinstance(extra, dict):
                    walk(extra, sub, f"{path}[{key!r}]")
        elif isinstance(value, list) and isinstance(schema_node.get("items"), dict):
            for i, sub in enumerate(value):
                walk(schema_node["items"], sub, f"{path}[{i}]")

    walk(openapi_schema, obj, "")
    return failed, unevaluated


def validate(obj: dict) -> None:
    """AssertionError naming the object and listing every problem when `obj` is not valid for its CRD."""
    found = problems(obj)
    if found:
        name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else None
        raise AssertionError(f"{obj.get('kind')} {name!r} is not valid for its CRD ({obj.get('apiVersion')}):\n  "
                             + "\n  ".join(found))


def cel_rules(api_version: str, kind: str) -> list[tuple[str, str]]:
    """(path, rule) of every x-kubernetes-validations rule in the schema: the checks this module does not run."""
    rules: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations") or []:
                rules.append((path or "(root)", rule.get("rule", "")))
            for key, sub in (node.get("properties") or {}).items():
                walk(sub, f"{path}.{key}" if path else key)
            if isinstance(node.get("items"), dict):
                walk(node["items"], path + "[]")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], path + "{}")

    walk(_crd_version(api_version, kind)["schema"]["openAPIV3Schema"], "")
    return rules


def schema(api_version: str, kind: str) -> dict:
    """The CRD's openAPIV3Schema for that version, as vendored (a copy)."""
    return copy.deepcopy(_crd_version(api_version, kind)["schema"]["openAPIV3Schema"])


def served_versions(group: str, kind: str) -> Optional[list[str]]:
    for path in _crd_files(group):
        crd = load_crd(path)
        if crd["spec"]["names"]["kind"] == kind:
            return [v["name"] for v in crd["spec"]["versions"] if v.get("served", True)]
    return None
