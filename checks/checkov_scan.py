"""checkov over the Kubernetes manifests and the Dockerfile: zero failures beyond the reviewed skip
list.

checkov runs from its own virtualenv (`make checkov`; it pins an old `packaging`) with
`--skip-download`, so it never reaches for the network. Skips live in one file,
checks/checkov-skips.txt, one per line:

    CHECK_ID  RESOURCE  reason a reviewer accepts

RESOURCE is a glob over checkov's resource name (`Kind.namespace.name` for Kubernetes, `Dockerfile.`
for the Dockerfile), so a skip covers exactly the objects it was argued for. A skip that matches
nothing is reported as stale, so the list shrinks when the code improves.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checks import tools
from checks.report import CheckResult

SKIPS_FILE = tools.REPO_ROOT / "checks" / "checkov-skips.txt"
_CHECK_ID = re.compile(r"^CKV2?_[A-Z0-9]+_\d+$")
_MIN_REASON_WORDS = 4


@dataclass(frozen=True)
class Skip:
    check_id: str
    resource: str
    reason: str
    line: int

    def matches(self, check_id: str, resource: str) -> bool:
        return check_id == self.check_id and fnmatch.fnmatchcase(resource, self.resource)


def load_skips(path: Path, result: CheckResult) -> list[Skip]:
    """Parse the skip list; a malformed line or a skip without a real reason is a finding."""
    skips: list[Skip] = []
    if not path.is_file():
        result.fail(tools.relative(path), "skip list missing (an empty file means no skips)")
        return skips
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        where = f"{tools.relative(path)}:{number}"
        if len(parts) < 3 or not _CHECK_ID.match(parts[0]):
            result.fail(
                where,
                "expected `CHECK_ID RESOURCE_GLOB reason`, e.g. `CKV_K8S_43 Deployment.x.* why`",
            )
            continue
        if len(parts[2].split()) < _MIN_REASON_WORDS:
            result.fail(
                where, f"skip of {parts[0]} needs a reason a reviewer can judge (a sentence)"
            )
            continue
        skips.append(Skip(parts[0], parts[1], parts[2], number))
    return skips


@dataclass(frozen=True)
class Target:
    """One checkov run: a directory of manifests or a single file, with the framework that reads
    it."""

    path: Path
    framework: str
    label: str


def check_checkov(targets: list[Target], skips_path: Path = SKIPS_FILE) -> CheckResult:
    result = CheckResult("checkov (" + ", ".join(t.label for t in targets) + ")")
    skips = load_skips(skips_path, result)
    checkov = tools.CHECKOV.locate()
    if checkov is None:
        result.fail("checkov", tools.CHECKOV.missing_message())
        return result
    present = [t for t in targets if t.path.exists()]
    for target in targets:
        if target not in present:
            result.fail(
                tools.relative(target.path), f"missing, so checkov cannot scan {target.label}"
            )
    # checkov spends seconds importing before it scans anything: run the targets side by side.
    with ThreadPoolExecutor(max_workers=max(1, len(present))) as pool:
        runs = list(pool.map(lambda t: _run_checkov(checkov, t), present))
    used: set[Skip] = set()
    for target, run in zip(present, runs, strict=True):
        _collect(target, run, skips, used, result)
    for skip in skips:
        if skip not in used:
            result.note(
                f"stale skip {skip.check_id} {skip.resource} "
                f"({tools.relative(skips_path)}:{skip.line}): "
                "nothing fails it any more; remove the line"
            )
    return result


def _run_checkov(checkov: Path, target: Target) -> subprocess.CompletedProcess[str]:
    # A file is scanned from its own folder: checkov names the resource after the path it was given
    # (`Dockerfile.FROM`), and skips must not depend on where the repository is checked out.
    is_dir = target.path.is_dir()
    return tools.run(
        [
            checkov,
            "-d" if is_dir else "-f",
            target.path if is_dir else target.path.name,
            "--framework",
            target.framework,
            "--skip-download",
            "--output",
            "json",
            "--compact",
            "--quiet",
        ],
        cwd=target.path if is_dir else target.path.parent,
        timeout=600,
    )


def _collect(
    target: Target,
    run: subprocess.CompletedProcess[str],
    skips: list[Skip],
    used: set[Skip],
    result: CheckResult,
) -> None:
    reports = _parse_reports(run.stdout)
    if reports is None:
        detail = (run.stderr or run.stdout).strip().splitlines()[-5:]
        result.fail(
            tools.relative(target.path), "checkov produced no JSON report: " + " | ".join(detail)
        )
        return
    scanned = sum(int((r.get("summary") or r).get("resource_count", 0)) for r in reports)
    if scanned == 0:
        result.fail(tools.relative(target.path), f"checkov found nothing to scan in {target.label}")
        return
    result.inspected += scanned
    for report in reports:
        results = report.get("results") or {}
        for parse_error in results.get("parsing_errors") or []:
            result.fail(str(parse_error), "checkov could not parse this file")
        for failed in results.get("failed_checks") or []:
            check_id, resource = failed["check_id"], failed.get("resource", "")
            skip = next((s for s in skips if s.matches(check_id, resource)), None)
            if skip is not None:
                used.add(skip)
                continue
            result.fail(_location(target, failed), _failure_message(failed))


def _parse_reports(stdout: str) -> list[dict[str, Any]] | None:
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    reports = data if isinstance(data, list) else [data]
    return [r for r in reports if isinstance(r, dict)]


def _location(target: Target, failed: dict[str, Any]) -> str:
    file_path = str(failed.get("file_path", "")).lstrip("/")
    base = target.path if target.path.is_dir() else target.path.parent
    lines = failed.get("file_line_range") or []
    suffix = f":{lines[0]}" if lines else ""
    return (
        f"{tools.relative(base / file_path) if file_path else tools.relative(target.path)}{suffix}"
    )


def _failure_message(failed: dict[str, Any]) -> str:
    message = f"{failed['check_id']} {failed.get('check_name', '')} [{failed.get('resource', '')}]"
    guideline = failed.get("guideline")
    if guideline:
        message += f" (see {guideline})"
    return message + "; fix it, or add a skip with its reason to checks/checkov-skips.txt"
