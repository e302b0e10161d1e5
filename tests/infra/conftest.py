"""Shared fixtures: each stack's real program runs once per test session under the mock engine."""

from __future__ import annotations

import pytest

from rehearsal.mockengine import Inventory, run_stack, stacks

STACKS = tuple(stacks())


@pytest.fixture(scope="session")
def inventories() -> dict[str, Inventory]:
    """Every stack (Pulumi.<stack>.yaml) rendered once: about two seconds each."""
    return {stack: run_stack(stack) for stack in STACKS}


@pytest.fixture(scope="session")
def dev(inventories: dict[str, Inventory]) -> Inventory:
    return inventories["dev"]


@pytest.fixture(scope="session")
def prod(inventories: dict[str, Inventory]) -> Inventory:
    return inventories["prod"]


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over every stack."""
    name: str = request.param
    return name


@pytest.fixture
def inventory(inventories: dict[str, Inventory], stack: str) -> Inventory:
    """The inventory of the stack the test is parametrised with."""
    return inventories[stack]
