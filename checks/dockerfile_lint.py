"""hadolint on the Dockerfile: no finding at any level (error, warning, info or style).

The configuration in .hadolint.yaml applies (the same one a developer's editor uses); the gate reads
hadolint's JSON so that each finding names its line, rule and the rule's own explanation.
"""

from __future__ import annotations

import json
from pathlib import Path

from checks import tools
from checks.report import CheckResult

DOCKERFILE = tools.REPO_ROOT / "Dockerfile"
CONFIG = tools.REPO_ROOT / ".hadolint.yaml"
_WIKI = "https://github.com/hadolint/hadolint/wiki/"


def check_hadolint(dockerfile: Path = DOCKERFILE, config: Path = CONFIG) -> CheckResult:
    result = CheckResult(f"hadolint {tools.relative(dockerfile)}")
    if not dockerfile.is_file():
        result.fail(
            tools.relative(dockerfile), "missing: the service image is built from it (issue #2)"
        )
        return result
    hadolint = tools.HADOLINT.locate()
    if hadolint is None:
        result.fail("hadolint", tools.HADOLINT.missing_message())
        return result
    args: list[str | Path] = [hadolint, "--no-color", "--format", "json"]
    if config.is_file():
        args += ["--config", config]
    run = tools.run([*args, dockerfile])
    try:
        findings = json.loads(run.stdout or "[]")
    except json.JSONDecodeError:
        result.fail(
            tools.relative(dockerfile), f"hadolint failed: {(run.stderr or run.stdout).strip()}"
        )
        return result
    result.inspected = 1
    for finding in findings:
        code = finding.get("code", "")
        link = f" ({_WIKI}{code})" if code.startswith("DL") else ""
        result.fail(
            f"{tools.relative(dockerfile)}:{finding.get('line')}",
            f"{code} {finding.get('level')}: {finding.get('message')}{link}",
        )
    if run.returncode != 0 and not findings:
        result.fail(
            tools.relative(dockerfile), f"hadolint exited {run.returncode}: {run.stderr.strip()}"
        )
    return result
