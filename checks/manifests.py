"""Kubernetes manifests: strict schema validation (kubernetes-validate) against the cluster's pinned
version.

`--strict` semantics: an unknown field is an error. The API server would drop it silently on apply
(or, with server-side field validation, reject the apply), so a misspelt `tolerations` or
`resources` never reaches the cluster. Validation runs in-process with the kubernetes-validate
library, the same code as its CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    for path in files:
        subject = tools.relative(path)
        try:
            objects = list(load_objects(path))
        except yaml.YAMLError as error:
            result.fail(subject, f"not valid YAML: {error}")
            continue
        for obj in objects:
            if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
                result.fail(
                    subject, "a document without apiVersion and kind is not a Kubernetes object"
                )
                continue
            result.inspected += 1
            problem = _validate(obj, kubernetes_version)
            if problem == "custom":
                custom.append(object_label(obj))
            elif problem:
                result.fail(subject, f"{object_label(obj)}: {problem}")
    if custom:
        result.note(f"custom resources have no built-in schema, not validated: {', '.join(custom)}")
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
