"""Offline render of a stack: `python -m rehearsal.synth dev --out build/synth/dev`.

Runs the real program under the mock engine (no cloud credentials, no Pulumi CLI), renders every
pinned chart with the program's values (rehearsal/charts.py), and writes a deterministic tree that
reviewers can diff in a pull request and that `make check` validates:

    inventory.yaml      every resource the engine registers (chart objects included): type, name,
                        URN, parent, provider and inputs (secrets masked), or a link to the file
                        that holds them (a manifest; a chart resource's values in charts/)
    manifests/          one file per Kubernetes object the program declares,
                        <namespace>-<kind>-<name>.yaml
    manifests/charts/<namespace>-<release>/
                        one file per object each chart renders (hooks left out where helm.v4.Chart
                        leaves them out; a helm.v3.Release's objects, which Helm creates, too)
    charts/             one file per chart resource: repository, chart, version, archive, release,
                        namespace, values, and what its render holds
    outputs.yaml        stack outputs (secrets masked, values unknown before deployment as
                        <computed>)
    config.yaml         the config the program ran with: Pulumi.yaml defaults, the stack file and
                        any overrides, as the CLI hands them (secrets masked)
    scaleup-budget.md   load to a new replica serving, step by step, read from the render
                        (rehearsal/budget.py): a change that slows a step shows in the diff

Two runs give byte-identical files. A config error or a missing chart archive exits with status 2
and the message only.
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

import pulumi
import yaml

from infra.charts import CHARTS_DIR, ChartArchiveError
from infra.config import ConfigError
from rehearsal import budget, charts, overlay
from rehearsal.mockengine import (
    ChartRender,
    Inventory,
    Resource,
    Secret,
    manifest,
    run_stack,
    stacks,
)

MASK: Final = "[secret]"
OWNED: Final = ("inventory.yaml", "outputs.yaml", "config.yaml", "manifests", "charts", budget.FILE)
"""What the synth writes; only these are replaced in the output folder."""
CHART_OBJECTS: Final = Path("manifests") / "charts"


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
    if isinstance(value, pulumi.asset.Asset):
        # A values file (helm.v4.Chart valueYamlFiles): its text, as the chart file shows it.
        return masked(_asset_text(value), secret)
    if isinstance(value, dict):
        return {k: masked(value[k], secret) for k in sorted(value)}
    if isinstance(value, list):
        return [masked(v, secret) for v in value]
    if secret:
        return MASK
    return value


def _asset_text(asset: pulumi.asset.Asset) -> str:
    for attribute in ("text", "path", "uri"):
        found = getattr(asset, attribute, None)
        if isinstance(found, str):
            return found
    return repr(asset)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")


def manifest_file(resource: Resource) -> str:
    return object_file(resource.inputs, resource.name)


def object_file(obj: dict[str, Any], fallback: str = "unnamed") -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "cluster"
    name = meta.get("name") or fallback
    return f"{_slug(str(namespace))}-{_slug(str(obj['kind']))}-{_slug(str(name))}.yaml"


def chart_folder(render: ChartRender) -> str:
    return f"{_slug(render.source.namespace)}-{_slug(render.source.release)}"


def program_file(component_type: str | None) -> str | None:
    """The module that declares a component (`gpu-inference:<module>:<Name>` is in
    infra/<module>.py by the project's convention)."""
    if component_type is None or component_type.count(":") != 2:
        return None
    module = component_type.split(":")[1]
    return f"infra/{module}.py"


def _parent_type(urn: str) -> str | None:
    chain = urn.split("::")[2].split("$")
    return chain[-2] if len(chain) > 1 else None


def masked_object(obj: dict[str, Any]) -> dict[str, Any]:
    """A chart object as written, laid out like the program's manifests; a Secret's data masked,
    like the program's own Secrets."""
    secret = obj.get("apiVersion") == "v1" and obj.get("kind") == "Secret"
    head = [k for k in ("apiVersion", "kind", "metadata") if k in obj]
    out = {}
    for key in [*head, *sorted(k for k in obj if k not in head)]:
        hidden = secret and key in ("data", "stringData")
        out[key] = masked(Secret(obj[key]) if hidden else obj[key])
    return out


def chart_document(resource: Resource, render: ChartRender | None = None) -> dict[str, Any]:
    inputs = resource.inputs
    doc: dict[str, Any] = {
        "resource": resource.name,
        "type": resource.type,
        "component": _parent_type(resource.urn),
        "program_file": program_file(_parent_type(resource.urn)),
    }
    if render is not None:
        pin = charts.pin_of(render.source.archive)
        # What is installed: the vendored archive (its path from the repository root, not from
        # the working directory the program ran in), and the upstream it is checked against.
        doc.update(
            chart=pin.chart,
            version=pin.version,
            app_version=pin.app_version,
            archive=f"{CHARTS_DIR.name}/{pin.archive_name}",
            sha256=pin.sha256,
            repository=pin.repository,
        )
    doc.update(
        release=inputs.get("name") or resource.name,
        namespace=inputs.get("namespace"),
        values=masked(inputs.get("values") or {}),
    )
    if render is None:
        return doc
    source = render.source
    if source.value_files:
        doc["value_files"] = list(source.value_files)
    if source.post_renderer:
        doc["post_renderer"] = list(source.post_renderer)
    doc["registered"] = (
        "each object is a Pulumi resource (helm.v4.Chart)"
        if render.registered
        else "Helm installs the objects; the engine registers only the release (helm.v3.Release)"
    )
    doc["objects"] = len(render.rendered.objects)
    hooks = [charts.object_key(h) for h in render.rendered.hooks]
    if hooks:
        doc["hooks_dropped" if render.registered else "hooks_run_by_helm"] = hooks
    if render.rendered.generated:
        doc["generated_at_install"] = list(render.rendered.generated)
    if render.rendered.duplicates:
        doc["duplicates_dropped"] = list(render.rendered.duplicates)
    if render.unknown_values:
        doc["unknown_at_preview"] = list(render.unknown_values)
    return doc


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
    chart_resources = inventory.charts()
    renders = {r.resource.urn: r for r in inventory.rendered}
    manifest_names = dict(
        zip((r.urn for r in k8s), _unique([manifest_file(r) for r in k8s]), strict=True)
    )
    chart_names = dict(
        zip(
            (r.urn for r in chart_resources),
            _unique([chart_file(r) for r in chart_resources]),
            strict=True,
        )
    )
    for r in k8s:
        (out / "manifests" / manifest_names[r.urn]).write_text(dump(masked_manifest(r)))
    chart_objects = 0
    for r in chart_resources:
        render = renders.get(r.urn)
        (out / "charts" / chart_names[r.urn]).write_text(dump(chart_document(r, render)))
        if render is None:
            continue
        folder = out / CHART_OBJECTS / chart_folder(render)
        folder.mkdir(parents=True)
        objects = render.rendered.objects
        for obj, name in zip(objects, _unique([object_file(o) for o in objects]), strict=True):
            (folder / name).write_text(dump(masked_object(obj)))
            manifest_names.setdefault(
                _object_urn_key(r.urn, obj), f"{CHART_OBJECTS}/{folder.name}/{name}"
            )
        chart_objects += len(objects)

    entries = []
    for r in inventory.resources:
        entry: dict[str, Any] = {
            "type": r.type,
            "name": r.name,
            "urn": r.urn,
            "parent": _short(r.parent),
        }
        if r.provider:
            entry["provider"] = _short(r.provider)
        chart_object = (
            _object_urn_key(r.rendered_by, r.inputs) if r.rendered_by is not None else None
        )
        if r.urn in manifest_names:
            entry["manifest"] = f"manifests/{manifest_names[r.urn]}"
        elif chart_object in manifest_names:
            entry["manifest"] = manifest_names[chart_object]
        elif r.urn in chart_names:
            entry["chart"] = f"charts/{chart_names[r.urn]}"
            # Every input but the values, which the chart file holds.
            entry["inputs"] = masked({k: v for k, v in r.inputs.items() if k != "values"})
        else:
            entry["inputs"] = masked(r.inputs)
        entries.append(entry)
    (out / "inventory.yaml").write_text(dump({"stack": stack, "resources": entries}))
    (out / "outputs.yaml").write_text(dump(masked(inventory.outputs)))
    (out / "config.yaml").write_text(dump(masked(inventory.config)))
    return {
        "resources": len(inventory.resources),
        "manifests": len(k8s),
        "charts": len(chart_resources),
        "chart_objects": chart_objects,
        "objects": len(k8s) + chart_objects,
    }


def _object_urn_key(chart_urn: str, obj: dict[str, Any]) -> str:
    return f"{chart_urn}#{charts.object_key(obj)}"


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
        f"{stack}: {counts['resources']} resources, {counts['objects']} Kubernetes objects "
        f"({counts['manifests']} from the program, {counts['chart_objects']} from "
        f"{counts['charts']} Helm charts) -> {out}"
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
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default build/synth/<stack>; <stack>-all-options with --all-options)",
    )
    parser.add_argument(
        "--all-options",
        action="store_true",
        help="switch every optional feature on (rehearsal/overlay.py) before the --set overrides",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for this render (VALUE is YAML), e.g. --set hpaMaxReplicas=8",
    )
    args = parser.parse_args(argv)
    name = args.stack + (overlay.SUFFIX if args.all_options else "")
    out: Path = args.out or Path("build/synth") / name
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    try:
        if args.all_options:
            overrides = {**overlay.all_options(args.stack), **overrides}
        inventory = run_stack(args.stack, overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, charts.ChartError, ChartArchiveError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = write(inventory, args.stack, out)
    # The whole program's render only: write() also serves partial inventories.
    (out / budget.FILE).write_text(
        budget.table([budget.budget(args.stack, inventory.cluster_objects())])
    )
    print(summary(inventory, args.stack, out, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
