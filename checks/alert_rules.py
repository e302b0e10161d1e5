"""Alert rules: valid for Prometheus (`promtool check rules`), behaving as intended (`promtool test
rules` with the unit tests in tests/checks/promtool/) and selecting only metrics that exist."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from checks import tools
from checks.metric_catalog import UNKNOWN_METRIC_HINT, metric_source
from checks.promql import metric_names, uses_name_matcher
from checks.report import CheckResult
from checks.yamlio import dump_yaml
from infra.alerts import alert_rule_groups

RULE_FILE_NAME = "alerts.yaml"
"""The name the promtool unit tests load (`rule_files: [alerts.yaml]`)."""
DEFAULT_TESTS_DIR = tools.REPO_ROOT / "tests" / "checks" / "promtool"


def check_alert_rules(
    out_dir: Path,
    tests_dir: Path = DEFAULT_TESTS_DIR,
    rule_file: dict[str, Any] | None = None,
) -> CheckResult:
    """Write the rule file into `out_dir` and check it; `rule_file` defaults to infra.alerts'
    defaults."""
    result = CheckResult("alert rules (promtool check + test, metric names)")
    rules = rule_file if rule_file is not None else alert_rule_groups()
    out_dir.mkdir(parents=True, exist_ok=True)
    rules_path = out_dir / RULE_FILE_NAME
    rules_path.write_text(dump_yaml(rules))
    result.note(f"rules written to {tools.relative(rules_path)}")
    check_rule_metric_names(rules, result)
    promtool = promtool_check_rules(rules_path, result)
    if promtool is None:
        return result

    test_files = sorted(tests_dir.glob("*_test.yaml"))
    if not test_files:
        result.fail(tools.relative(tests_dir), "no promtool unit tests (*_test.yaml) found")
        return result
    for test_file in test_files:
        # promtool resolves `rule_files` relative to the test file, so the tests run beside the
        # rules.
        local_copy = out_dir / test_file.name
        shutil.copyfile(test_file, local_copy)
        tested = tools.run([promtool, "test", "rules", local_copy.name], cwd=out_dir)
        result.inspected += 1
        if tested.returncode != 0:
            result.fail(
                tools.relative(test_file),
                "promtool test rules failed: " + _promtool_output(tested.stdout, tested.stderr),
            )
    return result


def promtool_check_rules(rules_path: Path, result: CheckResult) -> Path | None:
    """`promtool check rules`; returns promtool's path when the file passed (None: a finding was
    added, or promtool is missing where that is a skip)."""
    promtool = tools.PROMTOOL.locate()
    if promtool is None:
        tools.PROMTOOL.report_missing(result, "promtool")
        return None
    checked = tools.run([promtool, "check", "rules", rules_path])
    if checked.returncode != 0:
        result.fail(tools.relative(rules_path), _promtool_output(checked.stdout, checked.stderr))
        return None
    return promtool


def rule_expressions(rules: dict[str, Any]) -> list[str]:
    return [
        str(rule.get("expr", ""))
        for group in rules.get("groups", [])
        for rule in group.get("rules", [])
    ]


def check_rule_metric_names(rules: dict[str, Any], result: CheckResult) -> None:
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record") or "<unnamed rule>"
            subject = f"rule {group.get('name')}/{name}"
            expr = str(rule.get("expr", ""))
            result.inspected += 1
            if uses_name_matcher(expr):
                result.fail(
                    subject, "selects metrics by __name__; name them so they can be verified"
                )
            for metric in sorted(metric_names(expr)):
                if metric_source(metric) is None:
                    result.fail(subject, f"unknown metric {metric!r}: {UNKNOWN_METRIC_HINT}")


def _promtool_output(stdout: str, stderr: str) -> str:
    # promtool's own report is what a reviewer needs (which alert, eval time, expected vs got).
    lines = [line.rstrip() for line in (stdout + "\n" + stderr).splitlines() if line.strip()]
    return "\n      ".join(lines)
