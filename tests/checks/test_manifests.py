"""Strict schema validation of Kubernetes manifests against a pinned Kubernetes version."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from checks.manifests import check_manifests

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "embeddings", "namespace": "inference"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "embeddings"}},
        "template": {
            "metadata": {"labels": {"app": "embeddings"}},
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "registry.example/embeddings@sha256:" + "a" * 64,
                        "resources": {"limits": {"nvidia.com/gpu": 1}},
                    }
                ]
            },
        },
    },
}


def _render(tmp_path: Path, *objects: dict[str, Any]) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir()
    for i, obj in enumerate(objects):
        (directory / f"{i}.yaml").write_text(yaml.safe_dump(obj))
    return directory


def test_valid_manifests_pass(tmp_path: Path) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "embeddings", "namespace": "inference"},
        "spec": {"selector": {"app": "embeddings"}, "ports": [{"port": 80, "targetPort": 8000}]},
    }
    result = check_manifests(_render(tmp_path, DEPLOYMENT, service), "1.34", "dev")
    assert result.passed, result.render()
    assert result.inspected == 2


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # A misspelt field the API server would silently drop.
        (
            lambda d: d["spec"]["template"]["spec"].update(toleration=[]),
            "spec.template.spec: Additional properties are not allowed "
            "('toleration' was unexpected)",
        ),
        (lambda d: d["spec"].update(replicas="2"), "spec.replicas: '2' is not of type 'integer'"),
        (lambda d: d.update(apiVersion="extensions/v1beta1"), "Couldn't find schema for kind"),
    ],
)
def test_broken_manifest_fails_naming_file_object_and_field(
    tmp_path: Path, mutate: Any, expected: str
) -> None:
    broken = copy.deepcopy(DEPLOYMENT)
    mutate(broken)
    result = check_manifests(_render(tmp_path, broken), "1.34", "dev")
    assert not result.passed
    finding = result.findings[0]
    assert finding.subject.endswith("0.yaml")
    assert "Deployment inference/embeddings" in finding.message
    assert expected in finding.message


def test_api_removed_in_the_pinned_version_fails(tmp_path: Path) -> None:
    pdb = {
        "apiVersion": "policy/v1beta1",  # removed in Kubernetes 1.25
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "embeddings", "namespace": "inference"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "embeddings"}}},
    }
    result = check_manifests(_render(tmp_path, pdb), "1.34", "prod")
    assert not result.passed
    assert "PodDisruptionBudget" in str(result.findings[0])


def test_custom_resources_are_noted_not_failed(tmp_path: Path) -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "embeddings", "namespace": "inference"},
        "spec": {},
    }
    result = check_manifests(_render(tmp_path, DEPLOYMENT, monitor), "1.34", "dev")
    assert result.passed, result.render()
    assert "ServiceMonitor inference/embeddings" in result.notes[0]


def test_no_manifests_is_a_failure_not_a_pass(tmp_path: Path) -> None:
    result = check_manifests(tmp_path / "missing", "1.34", "dev")
    assert not result.passed
    assert "no manifests to validate" in str(result.findings[0])


def test_unsupported_version_fails(tmp_path: Path) -> None:
    result = check_manifests(_render(tmp_path, DEPLOYMENT), "1.99", "dev")
    assert not result.passed
    assert "does not support version 1.99" in str(result.findings[0])


def test_custom_resources_are_validated_against_their_crd_in_the_render(tmp_path: Path) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Cluster",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    good = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "ok"},
        "spec": {"size": 3},
        "status": {"anything": "goes"},
    }
    bad = {**good, "metadata": {"name": "bad"}, "spec": {"size": 3, "colour": "red"}}
    for name, obj in (("crd", crd), ("good", good), ("bad", bad)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(obj))
    result = check_manifests(tmp_path, "1.34", "dev")
    [finding] = result.findings
    assert "Widget bad" in str(finding)
    assert "colour" in str(finding)
    assert "CRD's openAPIV3Schema" in str(finding)
    assert not result.notes
