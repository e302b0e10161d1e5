"""The README's counts of resources and objects (section "The deploy rehearsal") are computed from
the renders here; when the program changes them, this test fails with the paragraph to paste."""

from __future__ import annotations

from collections.abc import Mapping

from rehearsal.mockengine import ROOT, Inventory, run_stack
from rehearsal.overlay import all_options
from tests.infra.conftest import STACKS


def _per_stack(numbers: Mapping[str, int], what: str) -> str:
    """'163 resources in dev and 200 in prod'."""
    parts = [
        f"{n} {what} in {stack}" if i == 0 else f"{n} in {stack}"
        for i, (stack, n) in enumerate(numbers.items())
    ]
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def _objects(inventories: Mapping[str, Inventory], charts: str) -> str:
    """'95 Kubernetes objects: 15 from the program and 80 from the charts' when every stack has
    the same counts; the charts' count and each stack's own when only the program's differ (a
    stack's options add objects, e.g. dev's servingHours schedule); else each stack's total."""
    program = {s: len(i.k8s_resources()) for s, i in inventories.items()}
    chart = {s: sum(len(r.rendered.objects) for r in i.rendered) for s, i in inventories.items()}
    if len(set(chart.values())) == 1:
        c = next(iter(chart.values()))
        if len(set(program.values())) == 1:
            p = next(iter(program.values()))
            return f"has {p + c} Kubernetes objects: {p} from the program and {c} from {charts}"
        return (
            f"has {c} Kubernetes objects from {charts}, and from the program "
            f"{_per_stack(program, 'objects')}"
        )
    total = {s: program[s] + chart[s] for s in inventories}
    return f"has its own count: {_per_stack(total, 'Kubernetes objects')}"


def _per_chart(inventory: Inventory) -> str:
    parts = []
    for render in sorted(inventory.rendered, key=lambda r: r.source.chart):
        objects = render.rendered.objects
        crds = sum(1 for o in objects if o["kind"] == "CustomResourceDefinition")
        parts.append(
            f"{render.source.chart} {len(objects)}" + (f" including {crds} CRDs" * bool(crds))
        )
    return ", ".join(parts)


def counts_paragraph(plain: Mapping[str, Inventory], full: Mapping[str, Inventory]) -> str:
    first = next(iter(plain.values()))
    charts = f"the {len(first.rendered)} charts ({_per_chart(first)})"
    resources = _per_stack({s: len(i.resources) for s, i in plain.items()}, "resources")
    all_resources = _per_stack({s: len(i.resources) for s, i in full.items()}, "resources")
    return (
        f"Counts: the engine registers {resources}; each stack {_objects(plain, charts)}. With "
        f"every optional feature on (the all-options renders) it registers {all_resources}; "
        f"each {_objects(full, 'the charts')}."
    )


def test_the_readme_counts_are_the_renders(inventories: dict[str, Inventory]) -> None:
    plain = {stack: inventories[stack] for stack in STACKS}
    full = {stack: run_stack(stack, all_options(stack)) for stack in STACKS}
    expected = counts_paragraph(plain, full)
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert expected in readme, f"README.md, section 'The deploy rehearsal', should say:\n{expected}"
