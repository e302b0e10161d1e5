"""README "Cost at preview": its example message and totals are the fixture's, recomputed here."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehearsal import costdoc, pricelist
from tests.infra.conftest import STACKS

README = Path(__file__).resolve().parents[2] / "README.md"
STALE = "README 'Cost at preview' is stale: paste the output of python -m rehearsal.costdoc"


@pytest.fixture(scope="module")
def text() -> str:
    return costdoc.readme_text([costdoc.price(stack) for stack in STACKS])


def test_the_readme_cost_example_is_the_one_the_fixture_gives(text: str) -> None:
    assert text in README.read_text(), STALE


def test_a_changed_fixture_price_leaves_the_readme_stale(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the README's numbers were typed in: a new price changed no test."""
    monkeypatch.setitem(pricelist.ON_DEMAND, "t3a.large", 0.0800)
    changed = costdoc.readme_text([costdoc.price(stack) for stack in STACKS])
    assert "systemNodeGroup[system]: on-demand t3.large, t3a.large: 1-3 x 0.0800-0.0832" in changed
    assert changed != text
    assert changed not in README.read_text()


def test_the_totals_follow_the_estimates(text: str) -> None:
    dev = costdoc.price("dev")
    floor = dev.estimate.floor
    assert f"dev: floor {floor.all_on_demand:.4f}," in text
    assert f"floor {floor.with_spot:.4f}, ceiling" in text
    # Awake 60 of 168 hours: the floor for 60, the idle floor for 108, per 730-hour month.
    assert dev.estimate.idle_floor is not None
    idle = dev.estimate.idle_floor.with_spot
    assert floor.with_spot is not None
    assert idle is not None
    month = round((floor.with_spot * 60 + idle * 108) / 168 * costdoc.HOURS_PER_MONTH)
    assert f"at the spot-price floor about {month:,} a month" in text


def test_the_readme_command_prints_it(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert costdoc.main(list(STACKS)) == 0
    assert capsys.readouterr().out == text
