"""Kubernetes manifests: strict schema validation (kubernetes-validate) against the cluster's pinned
version.

`--strict` semantics: an unknown field is an error. The API server would drop it silently on apply
(or, with server-side field validation, reject the apply), so a misspelt `tolerations` or
`resources` never reaches the cluster. Validation runs in-process with the kubernetes-validate
library, the same code as its CLI.

kubernetes-validate knows only the built-in APIs. A custom resource whose CRD is in the same render
(a chart ships both) is validated against that CRD's `openAPIV3Schema`, strictly as well (unknown
fields are errors unless the schema says `x-kubernetes-preserve-unknown-fields`); one without a CRD
in the render is listed by name, never silently passed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import VersionNotSupportedError

from checks import tools
from checks.report import CheckResult


def manifest_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_objects(path: Path) -> Iterator[dict[str, Any]]:
    """Every document of a manifest file (a file may hold several, separated by ---)."""
    for document in yaml.safe_load_all(path.read_text()):
        if document is not None:
            yield document


def object_label(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = metadata.get("name", "<no name>")
    return f"{obj.get('kind', '<no kind>')} {namespace + '/' if namespace else ''}{name}"


def _is_custom_resource(api_version: str) -> bool:
    # Built-in groups are "" (core), dot-less ones (apps, batch, autoscaling, policy) and *.k8s.io.
    group = api_version.rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def check_manifests(directory: Path, kubernetes_version: str, stack: str) -> CheckResult:
    result = CheckResult(
        f"kubernetes-validate --strict, stack {stack}, Kubernetes {kubernetes_version}"
    )
    files = manifest_files(directory) if directory.is_dir() else []
    if not files:
        result.fail(tools.relative(directory), "no manifests to validate (did the synth run?)")
        return result
    custom: list[str] = []
    loaded: list[tuple[str, list[Any]]] = []
    for path in files:
        subject = tools.relative(path)
        try:
            loaded.append((subject, list(load_objects(path))))
        except yaml.YAMLError as error:
            result.fail(subject, f"not valid YAML: {error}")
    schemas = crd_schemas([obj for _, objects in loaded for obj in objects])
    for subject, objects in loaded:
        for obj in objects:
            if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
                result.fail(
                    subject, "a document without apiVersion and kind is not a Kubernetes object"
                )
                continue
            result.inspected += 1
            problem = _validate(obj, kubernetes_version)
            if problem == "custom":
                schema = schemas.get((str(obj["apiVersion"]), str(obj["kind"])))
                if schema is None:
                    custom.append(object_label(obj))
                elif crd_problem := _validate_custom(obj, schema):
                    result.fail(subject, f"{object_label(obj)}: {crd_problem}")
            elif problem:
                result.fail(subject, f"{object_label(obj)}: {problem}")
    if custom:
        result.note(
            "custom resources with neither a built-in schema nor their CRD in the render, not "
            f"validated: {', '.join(custom)}"
        )
    return result


def _validate(obj: dict[str, Any], kubernetes_version: str) -> str | None:
    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.absolute_path) or "<object>"
        return f"{path}: {error.message} (Kubernetes {error.version} schema, strict)"
    except kubernetes_validate.SchemaNotFoundError as error:
        if _is_custom_resource(str(obj["apiVersion"])):
            return "custom"
        return f"{error.message}: the API was removed or never existed in this version"
    except VersionNotSupportedError as error:
        return f"{error.message}; supported: {', '.join(kubernetes_validate.utils.all_versions())}"
    return None


def crd_schemas(objects: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict schema of every served version of every CRD given."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in objects:
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd.get("spec") or {}
        for version in spec.get("versions") or []:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if version.get("served") and schema:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = _strict(schema, top=True)
    return schemas


def _strict(schema: dict[str, Any], top: bool = False) -> dict[str, Any]:
    """A structural schema as the API server applies it: unknown fields are not allowed (it would
    prune them), except where `x-kubernetes-preserve-unknown-fields` says otherwise."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        if top:
            # Every object carries these; CRD schemas may leave them out.
            out["properties"] = {"apiVersion": {}, "kind": {}, "metadata": {}, **out["properties"]}
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    return out


def _validate_custom(obj: dict[str, Any], schema: dict[str, Any]) -> str | None:
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(obj))
    if error is None:
        return None
    path = ".".join(str(p) for p in error.absolute_path) or "<object>"
    return f"{path}: {error.message} (the CRD's openAPIV3Schema in the render, strict)"
