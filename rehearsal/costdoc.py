"""The README's "Cost at preview" example, priced at the rehearsal's price fixture:
`python -m rehearsal.costdoc` prints it (the dev stack's preview message, then the totals of every
stack), and tests/infra/test_costdoc.py fails while the README says anything else, so a changed
fixture price, stack size or cost rule cannot leave hand-kept numbers behind.

The message is the CostEstimate component's own (infra/cost.py), run under the mock engine with
EKS's calendar read as the program reads it. A month is 730 hours, the month of AWS's pricing pages
and calculator; dev's awake hours are its servingHours windows merged, as its schedule runs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from infra import kubernetes_support
from infra.config import MINUTES_PER_DAY, StackConfig, awake_spans
from infra.cost import CostEstimate, CostEstimateArgs

HOURS_PER_MONTH: Final = 730
EXAMPLE_STACK: Final = "dev"
"""The stack whose preview message the README shows."""


@dataclass(frozen=True)
class Priced:
    stack: str
    cfg: StackConfig
    estimate: CostEstimate


def price(stack: str) -> Priced:
    """The stack's CostEstimate, priced at the fixture (mock engine)."""
    from rehearsal.mockengine import load_stack_config, run_function

    cfg = load_stack_config(stack)
    found: list[CostEstimate] = []

    def body() -> None:
        support = kubernetes_support.check(cfg)
        args = CostEstimateArgs(config=cfg, eks_version=support.pinned)
        found.append(CostEstimate(f"gpu-inference-{stack}-cost", args))

    run_function(body, {"aws:region": cfg.region}, stack=stack)
    return Priced(stack, cfg, found[0])


def preview_block(priced: Priced) -> str:
    """The message as `pulumi preview` prints it under the component."""
    head = f"  gpu-inference:cost:CostEstimate (gpu-inference-{priced.stack}-cost):"
    body = "\n".join(f"    {line}" for line in priced.estimate.message.splitlines())
    return f"```text\nDiagnostics:\n{head}\n{body}\n```\n"


def _usd(value: float | None) -> str:
    return "unpriced" if value is None else f"{value:.4f}"


def _month(hourly: float) -> str:
    return f"{round(hourly * HOURS_PER_MONTH):,}"


def totals(priced: Priced) -> str:
    """One stack's bounds, and its floor per month (with the schedule's idle hours, if any)."""
    e, stack = priced.estimate, priced.stack
    floor, ceiling = e.floor, e.ceiling
    text = (
        f"{stack}: floor {_usd(floor.all_on_demand)}, ceiling {_usd(ceiling.all_on_demand)} with "
        f"spot nodes billed on-demand (the outputs), floor {_usd(floor.with_spot)}, ceiling "
        f"{_usd(ceiling.with_spot)} at the fixture's spot prices"
    )
    if floor.with_spot is None or floor.all_on_demand is None:
        return text
    hours = priced.cfg.capacity.serving_hours
    if hours is None or e.idle_floor is None or e.idle_floor.with_spot is None:
        return f"{text}; at the spot-price floor about {_month(floor.with_spot)} a month"
    awake = sum(c - o for o, c in awake_spans(hours.windows)) / 60
    week = 7 * MINUTES_PER_DAY / 60
    share = awake / week
    monthly = floor.with_spot * share + e.idle_floor.with_spot * (1 - share)
    return (
        f"{text}; awake {awake:g} of the week's {week:g} hours, at the spot-price floor about "
        f"{_month(monthly)} a month rather than the {_month(floor.with_spot)} it would cost "
        f"around the clock"
    )


def readme_text(stacks: Sequence[Priced]) -> str:
    """What README "Cost at preview" shows: the example message, then every stack's totals."""
    (example,) = [p for p in stacks if p.stack == EXAMPLE_STACK]
    currency = example.estimate.summary["currency"]
    lines = "; ".join(totals(p) for p in stacks)
    return (
        f"{preview_block(example)}\n"
        f"(At the rehearsal's price fixture, `rehearsal/pricelist.py`: on-demand list prices of "
        f"us-east-1 and us-west-2 and typical spot prices, {currency} per hour, a month being "
        f"{HOURS_PER_MONTH} hours. {lines}. `python -m rehearsal.costdoc` prints this; "
        f"`tests/infra/test_costdoc.py` checks it.)\n"
    )


def main(argv: list[str] | None = None) -> int:
    from rehearsal.mockengine import stacks

    parser = argparse.ArgumentParser(prog="python -m rehearsal.costdoc", description=__doc__)
    parser.add_argument("stacks", nargs="*", help="default: every Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    sys.stdout.write(readme_text([price(s) for s in args.stacks or stacks()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
