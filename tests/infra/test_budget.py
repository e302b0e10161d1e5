"""The scale-up time budget: recomputed from the rendered stacks, as the README shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehearsal import budget
from rehearsal.mockengine import Inventory, run_stack

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_is_the_one_the_rendered_stacks_give(
    inventories: dict[str, Inventory],
) -> None:
    budgets = [
        budget.budget(name, inventory.cluster_objects()) for name, inventory in inventories.items()
    ]
    assert budget.table(budgets) in README.read_text(), (
        "README 'Scale-up time budget' is stale: paste the output of python -m rehearsal.budget"
    )


def step(b: budget.Budget, name: str) -> budget.Step:
    (found,) = [s for s in b.steps if s.name.startswith(name)]
    return found


def test_a_slower_scrape_interval_shows_in_the_budget(prod: Inventory) -> None:
    before = budget.budget("prod", prod.cluster_objects())
    after = budget.budget(
        "prod", run_stack("prod", {"prometheusScrapeInterval": "1m"}).cluster_objects()
    )
    assert step(before, "load shows").seconds == 15
    assert step(after, "load shows").seconds == 60
    assert after.total(warm=False) - before.total(warm=False) == 45
    assert after.total(warm=True) - before.total(warm=True) == 45


def test_headroom_takes_node_boot_and_image_pull_off_the_path(
    prod: Inventory, dev: Inventory
) -> None:
    warm = budget.budget("prod", prod.cluster_objects())
    assert warm.headroom == 1
    assert budget.budget("dev", dev.cluster_objects()).headroom == 0
    skipped = {s.name for s in warm.steps if s.cold_only}
    assert any(name.startswith("spot GPU node") for name in skipped)
    assert any(name.startswith("image pull") for name in skipped)
    assert warm.total(warm=False) - warm.total(warm=True) == sum(
        s.seconds for s in warm.steps if s.cold_only
    ) - sum(s.seconds for s in warm.steps if s.warm_only)


def test_rendered_steps_are_the_shortened_ones(prod: Inventory) -> None:
    b = budget.budget("prod", prod.cluster_objects())
    assert step(b, "cluster-autoscaler sees").seconds == 5  # --scan-interval=5s (default 10 s)
    assert step(b, "kubelet sees /ready").seconds == 2  # startup probe period (was 10 s)
    assert step(b, "HPA scale-up stabilisation").seconds == 0
    assert step(b, "NLB marks").seconds == 10  # 2 x 5 s (was 2 x 10 s)


def test_the_model_load_step_is_the_committed_measurement() -> None:
    measured = budget.cold_start()
    assert measured["runs"] >= 3
    assert measured["model_bytes"] > 1_000_000_000  # a gte-large-zh-sized model, not MiniLM
    assert 0 < measured["warmup_s"] < measured["ready_s"]


@pytest.mark.parametrize(
    ("text", "value"), [("15s", 15), ("1m", 60), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200)]
)
def test_durations(text: str, value: float) -> None:
    assert budget.seconds(text) == value


def test_a_bad_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        budget.seconds("15 seconds")


def test_synth_writes_the_budget_next_to_the_manifests(tmp_path: Path, dev: Inventory) -> None:
    from rehearsal import synth

    assert synth.main(["dev", "--out", str(tmp_path)]) == 0
    expected = budget.table([budget.budget("dev", dev.cluster_objects())])
    assert (tmp_path / budget.FILE).read_text() == expected


def test_the_readme_command_prints_the_table(
    inventories: dict[str, Inventory], capsys: pytest.CaptureFixture[str]
) -> None:
    assert budget.main([]) == 0
    budgets = [budget.budget(name, inv.cluster_objects()) for name, inv in inventories.items()]
    assert capsys.readouterr().out == budget.table(budgets)


def test_the_weak_steps_are_labelled_estimates(prod: Inventory) -> None:
    """Node boot (a GCE figure), pull throughput (another image's) and model load (on a CPU) read
    like this stack's own numbers before; the table now says they are estimates."""
    b = budget.budget("prod", prod.cluster_objects())
    estimated = {s.name for s in b.steps if s.estimate}
    assert estimated == {
        "spot GPU node: launch, boot, join, GPU allocatable",
        "image pull (5.6 GB compressed)",
        "container start, model load and warm-up",
    }
    rows = budget.table([b]).splitlines()
    for name in estimated:
        (row,) = [r for r in rows if r.startswith(f"| {name}")]
        assert "| **estimate** (" in row, row
    (total,) = [r for r in rows if r.startswith("| **total, without headroom")]
    assert total.endswith("| estimates: 3 of its steps, 88% of the prod total |")


def test_a_scheduled_stack_counts_the_headroom_the_schedule_wakes() -> None:
    """With servingHours the placeholders are created at zero; the budget reads the count the
    converge Job (and the morning's wake) gives them."""
    hours = {
        "timezone": "UTC",
        "windows": [{"days": ["mon-fri"], "start": "08:00", "end": "18:00"}],
    }
    scheduled = run_stack("prod", {"servingHours": hours}).cluster_objects()
    assert budget.budget("prod", scheduled).headroom == 1
