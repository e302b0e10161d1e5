"""The charts in each stack's render: every values key the program sets is one the chart reads, and
the render is what `pulumi up` would create.

Values check: a key path the program sets (`server.retention`) must exist in the chart's default
values (subcharts' defaults under their names) or be read by one of its templates
(`.Values.server.retention`); below a free-form map (a default of `{}` such as `nodeSelector`,
`extraArgs`, `podAnnotations`, or a documented map listed in FREE_FORM) any key is allowed. Lists
are values, not key paths. A typo, or a key a chart bump renamed, fails with the chart, the key and
the program file that sets it: Helm ignores unknown keys silently.

Render check: a helm.v4.Chart render holds no data generated anew on each render (a perpetual
diff: such charts belong in helm.v3.Release), no object twice (two resources with one URN), no
value unknown at preview (the provider renders nothing then), and shows the same API versions on
the first preview of a new stack (no cluster to ask) as `pulumi up` creates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from checks import tools
from checks.report import CheckResult
from checks.synth_render import StackRender
from rehearsal import charts

FREE_FORM: Final[dict[str, frozenset[str]]] = {
    # prometheus: serverFiles is a map of file name -> file content (values.yaml documents
    # `serverFiles: alerting_rules.yml: {}` and friends; any file name becomes a ConfigMap key).
    "prometheus": frozenset({"serverFiles"}),
    # cluster-autoscaler: expanderPriorities is priority -> list of node group regexes.
    "cluster-autoscaler": frozenset({"expanderPriorities"}),
    # grafana: `grafana.ini` is Grafana's configuration file as a map of section -> key -> value
    # (values.yaml: "values in map will be converted to ini format"; _config.tpl writes every
    # section); its default lists a few sections only.
    "grafana": frozenset({"grafana.ini"}),
}
"""Documented free-form maps whose chart default is not an empty map."""


def key_paths(values: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path to a non-map value (an empty map counts as a value)."""
    for key, value in values.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            yield from key_paths(value, path)
        else:
            yield path


def _template_reads(templates: Mapping[str, str]) -> set[tuple[str, ...]]:
    """`.Values.a.b.c` references, each made relative to its (sub)chart: a subchart's template
    reads `.Values.x`, which the parent sets as `<subchart>.x`."""
    reads: set[tuple[str, ...]] = set()
    pattern = re.compile(r"\.Values((?:\.[A-Za-z0-9_]+)+)")
    for path, text in templates.items():
        parts = path.split("/")
        scope = tuple(parts[i + 1] for i, p in enumerate(parts[:-1]) if p == "charts")
        for match in pattern.finditer(text):
            reads.add((*scope, *match.group(1).strip(".").split(".")))
    return reads


def unread_keys(
    chart: str, values: Mapping[str, Any], defaults: Mapping[str, Any], templates: Mapping[str, str]
) -> list[str]:
    """The program's key paths that the chart neither defaults nor reads."""
    reads = _template_reads(templates)
    free = FREE_FORM.get(chart, frozenset())
    unread = []
    for path in key_paths(values):
        if _read(path, defaults, reads, free):
            continue
        unread.append(".".join(path))
    return unread


def _read(
    path: tuple[str, ...],
    defaults: Mapping[str, Any],
    reads: set[tuple[str, ...]],
    free: frozenset[str],
) -> bool:
    if any(path[:i] in reads for i in range(1, len(path) + 1)):
        return True
    node: Any = defaults
    for i, key in enumerate(path):
        if ".".join(path[: i + 1]) in free:
            return True
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
        if isinstance(node, Mapping) and not node and i < len(path) - 1:
            return True  # a free-form map: `{}` by default, any keys allowed
    return True


def _archive(doc: Mapping[str, Any]) -> Path:
    """The vendored archive a chart file names (from the repository root), checked to be the
    pinned bytes."""
    archive = tools.REPO_ROOT / str(doc.get("archive"))
    charts.pin_of(archive)
    return archive


def check_chart_values(renders: list[StackRender]) -> CheckResult:
    result = CheckResult("chart values read by the pinned charts, renders as `pulumi up` creates")
    for render in renders:
        for name, doc in render.charts().items():
            where = f"stack {render.stack}: chart {doc.get('chart')} {doc.get('version')}"
            result.inspected += 1
            try:
                archive = _archive(doc)
                chart = charts.load(archive)
                templates = charts.template_sources(archive)
            except charts.ChartError as error:
                result.fail(where, str(error))
                continue
            for key in unread_keys(
                str(doc["chart"]), doc.get("values") or {}, chart.merge_values({}), templates
            ):
                result.fail(
                    where,
                    f"values key `{key}` set in {doc.get('program_file')} is not read by the "
                    "chart (not in its default values nor referenced by a template): a typo or "
                    "a key the chart renamed; Helm ignores it silently",
                )
            _check_render(where, doc, render, name, result)
    return result


def _check_render(
    where: str, doc: Mapping[str, Any], render: StackRender, name: str, result: CheckResult
) -> None:
    registered = "v4:Chart" in str(doc.get("type"))
    subject = f"{where} ({render.charts_dir.name}/{name}.yaml)"
    if registered:
        for path in doc.get("generated_at_install") or []:
            result.fail(
                subject,
                f"{path} changes on every render: a helm.v4.Chart child would show a diff on every "
                "preview; set it through values or install the chart with helm.v3.Release",
            )
        for duplicate in doc.get("duplicates_dropped") or []:
            result.fail(subject, f"{duplicate}: two resources with one URN fail `pulumi up`")
    for path in doc.get("unknown_at_preview") or []:
        result.fail(
            subject,
            f"values {path} is unknown at preview: the provider renders none of the chart's "
            "objects then, so the preview hides them",
        )
    source = charts.ChartSource(
        archive=_archive(doc),
        release=str(doc["release"]),
        namespace=str(doc["namespace"]),
        values=doc.get("values") or {},
        value_files=tuple(doc.get("value_files") or ()),
        post_renderer=tuple(doc.get("post_renderer") or ()),
    )
    if registered:
        for difference in charts.first_preview_differences(source):
            result.fail(subject, difference)
