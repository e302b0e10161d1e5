"""Reading a stack's offline render (`python -m rehearsal.synth STACK --out build/synth/STACK`).

The render holds `inventory.yaml` (every resource), `manifests/` (every native Kubernetes object),
`charts/` (every Helm chart with its values) and `config.yaml` (the config it was rendered with).
The gate validates these files, the same ones reviewers diff.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from checks import tools

SYNTH_ROOT = tools.REPO_ROOT / "build" / "synth"
EKS_CLUSTER_TYPE = "aws:eks/cluster:Cluster"


@dataclass(frozen=True)
class StackRender:
    stack: str
    root: Path

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def charts_dir(self) -> Path:
        return self.root / "charts"

    @property
    def inventory_path(self) -> Path:
        return self.root / "inventory.yaml"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def problems(self) -> list[str]:
        """What is missing for the gate to check this render (empty when complete)."""
        missing = []
        if not self.root.is_dir():
            return [
                f"{tools.relative(self.root)} does not exist: render it with `make synth "
                f"STACK={self.stack}`"
            ]
        for path in (self.inventory_path, self.manifests_dir):
            if not path.exists():
                missing.append(
                    f"{tools.relative(path)} missing from the render of stack {self.stack}"
                )
        return missing

    def kubernetes_version(self) -> str | None:
        """The EKS cluster's pinned version, as the program registered it."""
        if not self.inventory_path.is_file():
            return None
        inventory = yaml.safe_load(self.inventory_path.read_text())
        for item in walk_mappings(inventory):
            if item.get("type") == EKS_CLUSTER_TYPE:
                inputs = item["inputs"] if isinstance(item.get("inputs"), dict) else item
                version = inputs.get("version")
                if version is not None:
                    return str(version)
        return None

    def config(self) -> dict[str, Any]:
        """The config the render was made with (full keys, values as the CLI hands them)."""
        return yaml.safe_load(self.config_path.read_text()) or {}

    @cached_property
    def _inventory(self) -> dict[str, Any]:
        return yaml.safe_load(self.inventory_path.read_text()) or {}

    @property
    def stack_name(self) -> str:
        """The stack rendered (a render folder may carry a suffix, like dev-all-options)."""
        return str(self._inventory.get("stack") or self.stack)

    def registered(self) -> Iterator[RegisteredResource]:
        """Every resource the engine registered, with the inputs it handed the engine (secrets
        masked), read back from the files the inventory links to."""
        for entry in self._inventory.get("resources") or []:
            inputs = dict(entry.get("inputs") or {})
            if "manifest" in entry:
                inputs = yaml.safe_load((self.root / entry["manifest"]).read_text())
            if "chart" in entry:
                chart = yaml.safe_load((self.root / entry["chart"]).read_text()) or {}
                inputs["values"] = chart.get("values") or {}
            yield RegisteredResource(entry["type"], entry["name"], entry["urn"], inputs)

    def charts(self) -> dict[str, dict[str, Any]]:
        """Each chart file's content (repository, chart, version, namespace, values) by file
        stem."""
        if not self.charts_dir.is_dir():
            return {}
        return {
            path.stem: yaml.safe_load(path.read_text()) or {}
            for path in sorted(self.charts_dir.glob("*.y*ml"))
        }

    def manifests(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        if not self.manifests_dir.is_dir():
            return
        for path in sorted(self.manifests_dir.rglob("*.y*ml")):
            for document in yaml.safe_load_all(path.read_text()):
                if isinstance(document, dict):
                    yield path, document


@dataclass(frozen=True)
class RegisteredResource:
    """One resource as the engine saw it, read from a render."""

    type: str
    name: str
    urn: str
    inputs: dict[str, Any]


def walk_mappings(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a YAML tree, depth first (the inventory's exact nesting is the synth's
    business)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk_mappings(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_mappings(value)
