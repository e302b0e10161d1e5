"""`python -m checks.system_tools`, run by `make test` and `make check`: the Debian/Ubuntu packages
the tests and the gate need beyond the virtualenvs (checks/tools.py SYSTEM_TOOLS: promtool and
Prometheus from `prometheus`, amtool and Alertmanager from `prometheus-alertmanager`).

What is missing is installed with apt-get where this user can: as root, or through sudo that asks
no password (never a prompt: `make test` runs unattended). Where it cannot (no apt-get, no rights,
the install failed) one line says what is skipped and how to install it, and the command succeeds,
unless tools are required (CI, REQUIRE_PROMETHEUS=1): CI runs every check, so there it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from checks.tools import SYSTEM_TOOLS, tools_required


def missing_packages() -> list[str]:
    """The packages of the system tools this machine lacks, in SYSTEM_TOOLS order."""
    packages = [tool.package for tool in SYSTEM_TOOLS if tool.locate() is None and tool.package]
    return list(dict.fromkeys(packages))


@dataclass(frozen=True)
class Machine:
    is_root: bool
    passwordless_sudo: bool
    has_apt: bool


def this_machine() -> Machine:
    is_root = os.geteuid() == 0
    sudo = shutil.which("sudo")
    passwordless = (
        not is_root
        and sudo is not None
        and subprocess.run(
            [sudo, "-n", "true"], stdin=subprocess.DEVNULL, capture_output=True, check=False
        ).returncode
        == 0
    )
    return Machine(is_root, passwordless, shutil.which("apt-get") is not None)


def install_commands(packages: list[str], machine: Machine) -> list[list[str]] | None:
    """The apt-get commands that install `packages` here, or None where this user cannot."""
    if not machine.has_apt:
        return None
    if machine.is_root:
        prefix = []
    elif machine.passwordless_sudo:
        prefix = ["sudo", "-n"]
    else:
        return None
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    return [
        [*apt, "update", "-qq"],
        [*apt, "install", "-y", "-qq", "--no-install-recommends", *packages],
    ]


def main(machine: Machine | None = None) -> int:
    """Installs or reports; `machine` (default: this one) says what this user may do."""
    packages = missing_packages()
    if not packages:
        return 0
    commands = install_commands(packages, machine or this_machine())
    why = "this user cannot install them (apt-get as root or with password-less sudo)"
    if commands is not None:
        print(
            f"make: installing {' '.join(packages)} (apt-get) for the gate and the tests that "
            "run Prometheus and Alertmanager",
            flush=True,
        )
        for command in commands:
            if subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode != 0:
                break
        packages = missing_packages()
        if not packages:
            return 0
        why = "apt-get did not provide them"
    hint = f"sudo apt-get install {' '.join(packages)}"
    if tools_required():
        print(
            f"error: {' '.join(packages)} not installed and not installable here, and CI "
            f"(or REQUIRE_PROMETHEUS=1) runs every check: {hint}",
            file=sys.stderr,
        )
        return 1
    print(
        f"make: SKIPPING what needs {', '.join(packages)} (promtool and amtool checks of the "
        f"gate, the metrics-chain and alert-delivery tests): not installed, and {why}; to run "
        f"them: {hint}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
