"""Offline render of a stack: `python -m rehearsal.synth dev --out build/synth/dev`.

Runs the real program under the mock engine (no cloud credentials, no Pulumi CLI) and writes a
deterministic
tree that reviewers can diff in a pull request and that `make check` validates:

    inventory.yaml      every resource: type, name, parent, provider and inputs (secrets masked)
    manifests/          one file per native Kubernetes object, <namespace>-<kind>-<name>.yaml
    charts/             one file per Helm chart: repository, chart, version, namespace, values
    outputs.yaml        stack outputs (secrets masked, values unknown before deployment as
    <computed>)

Two runs give byte-identical files. A config error exits with status 2 and the validation message
only.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from infra.config import ConfigError
from rehearsal.mockengine import Inventory, Resource, Secret, manifest, run_stack, stacks

MASK: Final = "[secret]"
OWNED: Final = ("inventory.yaml", "outputs.yaml", "manifests", "charts")
"""What the synth writes; only these are replaced in the output folder."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=4096,
        allow_unicode=True,
    )


def masked(value: Any, secret: bool = False) -> Any:
    """Secrets masked, dict keys sorted (so the text does not depend on registration order).

    A secret object or list keeps its shape with every leaf masked, so a manifest whose
    `stringData` is secret still validates against the Kubernetes schema.
    """
    if isinstance(value, Secret):
        return masked(value.value, secret=True)
    if isinstance(value, dict):
        return {k: masked(value[k], secret) for k in sorted(value)}
    if isinstance(value, list):
        return [masked(v, secret) for v in value]
    if secret:
        return MASK
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")


def manifest_file(resource: Resource) -> str:
    meta = resource.inputs.get("metadata") or {}
    namespace = meta.get("namespace") or "cluster"
    name = meta.get("name") or resource.name
    return f"{_slug(str(namespace))}-{_slug(str(resource.inputs['kind']))}-{_slug(str(name))}.yaml"


def chart_document(resource: Resource) -> dict[str, Any]:
    inputs = resource.inputs
    repo = inputs.get("repositoryOpts") or {}
    return {
        "resource": resource.name,
        "type": resource.type,
        "repository": repo.get("repo"),
        "chart": inputs.get("chart"),
        "version": inputs.get("version"),
        "release": inputs.get("name") or resource.name,
        "namespace": inputs.get("namespace"),
        "values": masked(inputs.get("values") or {}),
    }


def chart_file(resource: Resource) -> str:
    doc = chart_document(resource)
    return f"{_slug(str(doc['namespace'] or 'default'))}-{_slug(resource.name)}.yaml"


def _unique(names: list[str]) -> list[str]:
    """Disambiguates file names that collide (same object name from two resources)."""
    seen: Counter[str] = Counter()
    result = []
    for name in names:
        seen[name] += 1
        result.append(name if seen[name] == 1 else f"{name[:-5]}-{seen[name]}.yaml")
    return result


def _short(urn: str | None) -> str | None:
    """type::name of a URN (enough to find the parent in the same inventory)."""
    if urn is None:
        return None
    parts = urn.split("::")
    return f"{parts[-2].split('$')[-1]}::{parts[-1]}"


def write(inventory: Inventory, stack: str, out: Path) -> dict[str, Any]:
    """Writes the render; returns counts for the summary."""
    out.mkdir(parents=True, exist_ok=True)
    for owned in OWNED:
        path = out / owned
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (out / "manifests").mkdir()
    (out / "charts").mkdir()

    k8s = inventory.k8s_resources()
    charts = inventory.charts()
    manifest_names = dict(
        zip((r.urn for r in k8s), _unique([manifest_file(r) for r in k8s]), strict=True)
    )
    chart_names = dict(
        zip((r.urn for r in charts), _unique([chart_file(r) for r in charts]), strict=True)
    )
    for r in k8s:
        (out / "manifests" / manifest_names[r.urn]).write_text(dump(masked_manifest(r)))
    for r in charts:
        (out / "charts" / chart_names[r.urn]).write_text(dump(chart_document(r)))

    entries = []
    for r in inventory.resources:
        entry: dict[str, Any] = {"type": r.type, "name": r.name, "parent": _short(r.parent)}
        if r.provider:
            entry["provider"] = _short(r.provider)
        if r.urn in manifest_names:
            entry["manifest"] = f"manifests/{manifest_names[r.urn]}"
        elif r.urn in chart_names:
            entry["chart"] = f"charts/{chart_names[r.urn]}"
        else:
            entry["inputs"] = masked(r.inputs)
        entries.append(entry)
    (out / "inventory.yaml").write_text(dump({"stack": stack, "resources": entries}))
    (out / "outputs.yaml").write_text(dump(masked(inventory.outputs)))
    return {"resources": len(inventory.resources), "manifests": len(k8s), "charts": len(charts)}


def masked_manifest(resource: Resource) -> dict[str, Any]:
    """apiVersion, kind and metadata first (as people write manifests), the rest sorted."""
    return {k: masked(v) for k, v in manifest(resource).items()}


def summary(inventory: Inventory, stack: str, out: Path, counts: dict[str, Any]) -> str:
    """A short tree: top-level components, what they hold, and the totals."""
    by_urn = {r.urn: r for r in inventory.resources}

    def top(r: Resource) -> Resource:
        while r.parent in by_urn:
            r = by_urn[r.parent]
        return r

    groups: dict[str, Counter[str]] = {}
    for r in inventory.resources:
        root = top(r)
        if r is root:
            groups.setdefault(f"{root.type} {root.name}", Counter())
            continue
        kind = r.type.split(":")[-1]
        if r.type.startswith("pulumi:providers:"):
            kind = f"Provider({kind})"
        groups.setdefault(f"{root.type} {root.name}", Counter())[kind] += 1
    lines = [
        f"{stack}: {counts['resources']} resources, {counts['manifests']} Kubernetes objects, "
        f"{counts['charts']} Helm charts -> {out}"
    ]
    names = sorted(groups)
    for i, name in enumerate(names):
        last = i == len(names) - 1
        lines.append(f"{'└─' if last else '├─'} {name}")
        kinds = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(groups[name].items()))
        if kinds:
            lines.append(f"{'  ' if last else '│ '}   {kinds}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rehearsal.synth",
        description="Render a stack offline under the mock engine.",
    )
    parser.add_argument("stack", help=f"stack name (one of: {', '.join(stacks())})")
    parser.add_argument("--out", type=Path, help="output folder (default build/synth/<stack>)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for this render (VALUE is YAML), e.g. --set hpaMaxReplicas=8",
    )
    args = parser.parse_args(argv)
    out: Path = args.out or Path("build/synth") / args.stack
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    try:
        inventory = run_stack(args.stack, overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = write(inventory, args.stack, out)
    print(summary(inventory, args.stack, out, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
