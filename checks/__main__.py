"""`python -m checks dev prod dev-all-options prod-all-options`: the pre-deploy gate on each render
(build/synth/<name>: a stack as committed, or with every optional feature on), run by `make check`.

Exit status 0 only when every check passed and each inspected something; otherwise 1, after printing
every finding (the gate never stops at the first problem: a reviewer wants the whole list).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from checks import tools
from checks.alert_rules import check_alert_rules
from checks.alertmanager_config import check_alertmanager
from checks.chart_values import check_chart_values
from checks.checkov_scan import Target, check_checkov
from checks.dashboards import check_dashboard
from checks.dockerfile_lint import DOCKERFILE, check_hadolint
from checks.manifests import check_manifests
from checks.policy_check import check_policies
from checks.report import CheckResult
from checks.synth_checks import check_deployed_observability
from checks.synth_render import SYNTH_ROOT, StackRender
from checks.versions import check_versions
from checks.workflows import check_workflows
from checks.yaml_lint import check_yamllint, default_targets

BUILD_DIR = tools.REPO_ROOT / "build" / "checks"


def _render_problems(renders: list[StackRender]) -> CheckResult:
    result = CheckResult("synth renders (" + ", ".join(r.stack for r in renders) + ")")
    for render in renders:
        result.inspected += 1
        for problem in render.problems():
            result.fail(f"stack {render.stack}", problem)
        if not render.problems() and render.kubernetes_version() is None:
            result.fail(
                tools.relative(render.inventory_path),
                "no aws:eks/cluster:Cluster with inputs.version in it: cannot pick the Kubernetes "
                "schema to validate the manifests against",
            )
    return result


def _manifest_checks(renders: list[StackRender]) -> list[Callable[[], CheckResult]]:
    checks: list[Callable[[], CheckResult]] = []
    for render in renders:
        version = render.kubernetes_version()
        if version is not None:
            checks.append(partial(check_manifests, render.manifests_dir, version, render.stack))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m checks", description=__doc__)
    parser.add_argument(
        "stacks",
        nargs="+",
        help="renders to check (folders of --synth-root), e.g. dev prod dev-all-options",
    )
    parser.add_argument(
        "--synth-root", type=Path, default=SYNTH_ROOT, help="where `make synth` wrote"
    )
    args = parser.parse_args(argv)

    renders = [StackRender(stack, args.synth_root / stack) for stack in args.stacks]
    checkov_targets = [
        Target(r.manifests_dir, "kubernetes", f"stack {r.stack} manifests") for r in renders
    ] + [Target(DOCKERFILE, "dockerfile", "Dockerfile")]
    checks: list[Callable[[], CheckResult]] = [
        lambda: _render_problems(renders),
        check_versions,
        *_manifest_checks(renders),
        lambda: check_chart_values(renders),
        lambda: check_checkov(checkov_targets),
        check_hadolint,
        lambda: check_alert_rules(BUILD_DIR / "rules"),
        check_dashboard,
        lambda: check_deployed_observability(renders, BUILD_DIR / "deployed"),
        lambda: check_alertmanager(renders, BUILD_DIR / "alertmanager"),
        lambda: check_policies(renders),
        lambda: check_yamllint(default_targets()),
        check_workflows,
    ]
    results = []
    for check in checks:
        started = time.monotonic()
        result = check()
        results.append(result)
        print(result.render(time.monotonic() - started), flush=True)
    failed = [r for r in results if not r.passed]
    findings = sum(len(r.findings) for r in results)
    skipped = list(dict.fromkeys(line for r in results for line in r.skipped))
    if skipped:
        partly = sum(1 for r in results if r.skipped)
        print(f"\nmake check: {partly} check(s) skipped parts on this machine (never in CI):")
        print("\n".join(f"  {line}" for line in skipped))
    if failed:
        print(
            f"\nmake check: FAILED: {len(failed)} of {len(results)} checks, {findings} finding(s)"
        )
        return 1
    print(f"\nmake check: all {len(results)} checks passed" + (" or skipped" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
