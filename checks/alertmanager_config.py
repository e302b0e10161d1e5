"""Alertmanager routing: the configuration each stack deploys is one Alertmanager accepts (`amtool
check-config`, Debian `prometheus-alertmanager`), and every alert rule the stack deploys is routed
where the stack's delivery says (`amtool config routes test` with the rule's labels).

The configuration is read from the render: the Alertmanager ConfigMap the Prometheus chart renders
(or, in a render without chart objects, the chart's `alertmanager.config` value).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from checks import tools
from checks.report import CheckResult
from checks.synth_checks import deployed_rule_files
from checks.synth_render import StackRender, walk_mappings
from checks.yamlio import dump_yaml
from infra.alerting import NOWHERE

ALERTMANAGER_VALUES_KEY = "alertmanager"
CONFIG_FILE = "alertmanager.yml"


def deployed_alertmanager_configs(render: StackRender) -> list[tuple[str, dict[str, Any]]]:
    """(where, configuration) of every Alertmanager the stack deploys.

    The rendered ConfigMaps (`alertmanager.yml`, what the pod reads) when the render holds the
    chart objects; otherwise the charts' `alertmanager.config` values (which the subchart writes
    verbatim, less `enabled`).
    """
    rendered = []
    for path, obj in render.manifests():
        data = obj.get("data") if obj.get("kind") == "ConfigMap" else None
        if isinstance(data, dict) and CONFIG_FILE in data:
            text = data[CONFIG_FILE]
            where = f"{tools.relative(path)} data[{CONFIG_FILE}]"
            rendered.append((where, yaml.safe_load(text) if isinstance(text, str) else {}))
    if rendered:
        return rendered
    found = []
    for chart_name, chart in render.charts().items():
        for mapping in walk_mappings(chart.get("values") or {}):
            values = mapping.get(ALERTMANAGER_VALUES_KEY)
            if not isinstance(values, dict) or not isinstance(values.get("config"), dict):
                continue
            config = {k: v for k, v in values["config"].items() if k != "enabled"}
            found.append((f"{chart_name} values alertmanager.config", config))
    return found


def check_config_file(path: Path, subject: str, result: CheckResult) -> Path | None:
    """`amtool check-config`; returns amtool's path when the file passed (None: a finding)."""
    amtool = tools.AMTOOL.locate()
    if amtool is None:
        tools.AMTOOL.report_missing(result, "amtool")
        return None
    checked = tools.run([amtool, "check-config", path])
    result.inspected += 1
    if checked.returncode != 0:
        output = (checked.stdout + "\n" + checked.stderr).strip().replace("\n", "\n      ")
        result.fail(
            subject, f"amtool check-config rejected {tools.relative(path)}:\n      {output}"
        )
        return None
    return amtool


def routed_receivers(amtool: Path, config: Path, labels: dict[str, str]) -> list[str]:
    """The receivers Alertmanager would notify for an alert with these labels."""
    args: list[str | Path] = [amtool, "config", "routes", "test", f"--config.file={config}"]
    args += [f"{k}={v}" for k, v in sorted(labels.items())]
    routed = tools.run(args)
    if routed.returncode != 0:
        raise RuntimeError(f"amtool config routes test failed: {routed.stderr.strip()}")
    return [r.strip() for r in routed.stdout.replace(",", "\n").splitlines() if r.strip()]


def _delivered(config: dict[str, Any]) -> bool:
    return any(r.get("name") != NOWHERE for r in config.get("receivers") or [])


def check_routes(
    amtool: Path,
    config_path: Path,
    config: dict[str, Any],
    rules: list[dict[str, Any]],
    subject: str,
    result: CheckResult,
) -> None:
    """Every deployed alert reaches a receiver when any is configured, and never `nowhere` then."""
    delivered = _delivered(config)
    table = []
    for rule in rules:
        labels = {"alertname": rule["alert"], **(rule.get("labels") or {})}
        try:
            receivers = routed_receivers(amtool, config_path, labels)
        except RuntimeError as error:
            result.fail(subject, f"alert {labels['alertname']}: {error}")
            continue
        result.inspected += 1
        table.append(f"{labels['alertname']} -> {'+'.join(receivers) or '-'}")
        if delivered and (not receivers or NOWHERE in receivers):
            result.fail(
                subject,
                f"alert {labels['alertname']} (severity {labels.get('severity')}) is routed to "
                f"{receivers or 'no receiver'} although the stack has receivers: a page or ticket "
                "would be lost",
            )
    result.note(f"{subject}: " + ", ".join(table))


def check_alertmanager(renders: list[StackRender], out_dir: Path) -> CheckResult:
    result = CheckResult("Alertmanager configuration (amtool check-config, routes of every rule)")
    for render in renders:
        if render.problems():
            result.fail(f"stack {render.stack}", "no complete render to read (see the synth check)")
            continue
        configs = deployed_alertmanager_configs(render)
        if not configs:
            result.fail(
                f"stack {render.stack}",
                "no alertmanager.config in any chart's values: alerts would use the chart's "
                "placeholder receiver",
            )
        rules = [
            rule
            for _, rule_file in deployed_rule_files(render)
            for group in rule_file.get("groups", [])
            for rule in group.get("rules", [])
            if "alert" in rule
        ]
        for index, (where, config) in enumerate(configs):
            subject = f"stack {render.stack}: {where}"
            path = out_dir / render.stack / f"{index}-{CONFIG_FILE}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(dump_yaml(config))
            amtool = check_config_file(path, subject, result)
            if amtool is not None:
                check_routes(amtool, path, config, rules, subject, result)
    return result
