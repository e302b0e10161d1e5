"""The all-options overlay: every optional feature of the program switched on, for one stack.

`make check` renders each stack twice: as committed, and with this overlay on top
(`python -m rehearsal.synth <stack> --all-options`), so the objects of features that the committed
stacks leave off (time-slicing, TLS, Route 53, API keys, an internet-facing NLB, an existing VPC,
alert receivers of each kind, a prebuilt image, ...) pass the same gate.

The overlay is generated from the key declarations (infra/keys.py): each key's `on` value, with
"{region}" and "{partition}" replaced by the stack's. A new key joins by declaring `on=` (a test
fails while a key that defaults off declares neither `on` nor a reasoned `off`).
"""

from __future__ import annotations

from typing import Any, Final

from infra import keys
from infra.config import partition
from rehearsal.mockengine import stack_config

SUFFIX: Final = "-all-options"
"""The render of stack S with the overlay is `build/synth/S-all-options`."""


def all_options(stack: str) -> dict[str, Any]:
    """Key -> value that switches the key's feature on in `stack` (short keys, as `--set` takes)."""
    values, _ = stack_config(stack)
    region = values["aws:region"]
    places = {"region": region, "partition": partition(region)}
    return {s.name: _fill(s.on, places) for s in keys.specs().values() if s.has_on}


def _fill(value: Any, places: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**places) if "{" in value else value
    if isinstance(value, list):
        return [_fill(v, places) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, places) for k, v in value.items()}
    return value
