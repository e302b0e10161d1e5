"""A fresh machine's `make test`: the Debian-packaged tools are installed where this user can,
skipped visibly where it cannot, and required in CI (checks/system_tools.py, checks/tools.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from checks import system_tools, tools
from checks.alert_rules import check_alert_rules
from checks.dashboards import check_dashboard
from checks.system_tools import Machine, install_commands

PACKAGES = ["prometheus", "prometheus-alertmanager"]


@pytest.fixture
def without_promtool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """promtool and amtool as on a machine without the Debian packages (their env override points
    at a file that does not exist, which `Tool.locate` reads as missing)."""
    for tool in tools.SYSTEM_TOOLS:
        monkeypatch.setenv(tool.env_var, str(tmp_path / "absent" / tool.name))


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("REQUIRE_PROMETHEUS", raising=False)


@pytest.mark.parametrize(
    ("machine", "prefix"),
    [
        (Machine(is_root=True, passwordless_sudo=False, has_apt=True), []),
        (Machine(is_root=False, passwordless_sudo=True, has_apt=True), ["sudo", "-n"]),
    ],
)
def test_root_or_passwordless_sudo_installs_with_apt(machine: Machine, prefix: list[str]) -> None:
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    assert install_commands(PACKAGES, machine) == [
        [*apt, "update", "-qq"],
        [*apt, "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ]


@pytest.mark.parametrize(
    "machine",
    [
        Machine(is_root=False, passwordless_sudo=False, has_apt=True),
        Machine(is_root=True, passwordless_sudo=False, has_apt=False),
    ],
)
def test_without_rights_or_apt_nothing_is_installed(machine: Machine) -> None:
    assert install_commands(PACKAGES, machine) is None


@pytest.mark.parametrize(
    ("env", "required"),
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "false"}, False),
        ({"REQUIRE_PROMETHEUS": "1"}, True),
    ],
)
def test_ci_or_require_prometheus_requires_every_tool(
    monkeypatch: pytest.MonkeyPatch, local: None, env: dict[str, str], required: bool
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tools.tools_required() is required


def test_missing_packages_are_named_once_each(without_promtool: None) -> None:
    assert system_tools.missing_packages() == PACKAGES


def test_a_user_who_cannot_install_gets_a_skip_line_with_the_command(
    without_promtool: None,
    local: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert system_tools.main(Machine(is_root=False, passwordless_sudo=False, has_apt=True)) == 0
    out = capsys.readouterr().out
    assert out.startswith("make: SKIPPING what needs prometheus, prometheus-alertmanager")
    assert out.rstrip().endswith(
        "to run them: sudo apt-get install prometheus prometheus-alertmanager"
    )


def test_ci_fails_when_the_tools_cannot_be_installed(
    monkeypatch: pytest.MonkeyPatch,
    without_promtool: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CI", "true")
    assert system_tools.main(Machine(is_root=True, passwordless_sudo=False, has_apt=False)) == 1
    assert "sudo apt-get install prometheus prometheus-alertmanager" in capsys.readouterr().err


def test_the_gate_skips_promtool_checks_locally_and_says_how_to_install(
    tmp_path: Path, without_promtool: None, local: None
) -> None:
    # Before, these were findings: `make check` failed on a machine without the Debian packages.
    rules = check_alert_rules(tmp_path)
    assert rules.passed
    assert rules.inspected > 0
    (line,) = rules.skipped
    assert "promtool is not installed" in line
    assert "sudo apt-get install prometheus" in line
    assert "[PASS]" in rules.render()
    assert "skipped: promtool" in rules.render()
    dashboard = check_dashboard()
    assert dashboard.passed
    assert dashboard.skipped


def test_the_gate_fails_without_promtool_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, without_promtool: None
) -> None:
    monkeypatch.setenv("CI", "true")
    rules = check_alert_rules(tmp_path)
    assert not rules.passed
    assert [f.subject for f in rules.findings] == ["promtool"]
