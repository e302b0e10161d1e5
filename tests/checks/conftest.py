"""Shared fixtures of the gate's tests: the external tools, located the way the gate locates
them."""

from __future__ import annotations

from pathlib import Path

import pytest

from checks import tools
from policy.policies import StackInfo
from rehearsal.mockengine import Inventory, run_stack, stacks


def require(tool: tools.Tool) -> Path:
    """The tool's path; a missing tool skips locally and fails where tools are required (CI,
    REQUIRE_PROMETHEUS=1), where it must exist."""
    path = tool.locate()
    if path is None:
        message = tool.missing_message()
        if tools.tools_required():
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def promtool() -> Path:
    return require(tools.PROMTOOL)


@pytest.fixture
def hadolint() -> Path:
    return require(tools.HADOLINT)


@pytest.fixture
def actionlint() -> Path:
    return require(tools.ACTIONLINT)


@pytest.fixture(scope="module")
def checkov() -> Path:
    return require(tools.CHECKOV)


@pytest.fixture(scope="session")
def stack_inventories() -> dict[str, tuple[StackInfo, Inventory]]:
    """Each stack's real program under the mock engine, with its production flag from its config."""
    inventories = {stack: run_stack(stack) for stack in stacks()}
    return {
        stack: (
            StackInfo(stack, inventory.config.get("gpu-inference:production") == "true"),
            inventory,
        )
        for stack, inventory in inventories.items()
    }
