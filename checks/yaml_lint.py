"""yamllint on the YAML people edit (stack files, workflows, policy pack, promtool tests), warnings
included."""

from __future__ import annotations

from pathlib import Path

from yamllint import linter
from yamllint.config import YamlLintConfig

from checks import tools
from checks.report import CheckResult

CONFIG = tools.REPO_ROOT / ".yamllint"


def default_targets(root: Path = tools.REPO_ROOT) -> list[Path]:
    """Stack files, workflows, the policy pack's project file and the promtool unit tests."""
    patterns = (
        "Pulumi.yaml",
        "Pulumi.*.yaml",
        ".github/workflows/*.yml",
        ".github/workflows/*.yaml",
        "policy/PulumiPolicy.yaml",
        "tests/checks/promtool/*.yaml",
        ".hadolint.yaml",
        ".yamllint",
    )
    return sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})


def check_yamllint(files: list[Path], config: Path = CONFIG) -> CheckResult:
    result = CheckResult("yamllint (stack files, workflows, policy pack, promtool tests)")
    if not config.is_file():
        result.fail(tools.relative(config), "yamllint configuration missing")
        return result
    conf = YamlLintConfig(file=str(config))
    for path in files:
        result.inspected += 1
        for problem in linter.run(path.read_text(), conf, str(path)):
            rule = f" ({problem.rule})" if problem.rule else ""
            result.fail(
                f"{tools.relative(path)}:{problem.line}:{problem.column}",
                f"{problem.level}: {problem.desc}{rule}",
            )
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        if not any(p.name == name for p in files):
            result.note(f"{name} not found: not linted")
    return result
