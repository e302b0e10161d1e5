"""The policy pack (policy/policies.py) over every resource a render registered: the same
validation `pulumi preview --policy-pack policy` runs, without the Pulumi CLI.

It reads the render (`inventory.yaml` and the files it links to, `config.yaml`), so a render made
with overrides (`--set`, `--all-options`) is checked as rendered, not as the committed stack
file."""

from __future__ import annotations

from checks.report import CheckResult
from checks.synth_render import StackRender
from policy.policies import StackInfo, violations
from rehearsal.mockengine import PROJECT


def stack_info(render: StackRender) -> StackInfo:
    """Production or not, from the config the render was made with (as the pack reads it)."""
    production = render.config().get(f"{PROJECT}:production") == "true"
    return StackInfo(name=render.stack_name, production=production)


def check_policies(renders: list[StackRender]) -> CheckResult:
    result = CheckResult(
        "policy pack on every resource each render registered, chart objects included ("
        + ", ".join(r.stack for r in renders)
        + ")"
    )
    for render in renders:
        if render.problems() or not render.config_path.is_file():
            result.fail(
                f"stack {render.stack}",
                "no complete render to read (inventory.yaml, config.yaml: see the synth check)",
            )
            continue
        info = stack_info(render)
        for resource in render.registered():
            result.inspected += 1
            found = violations(resource.type, resource.inputs, info, resource.urn)
            for policy, messages in found.items():
                for message in messages:
                    result.fail(
                        f"stack {render.stack}: {resource.type} {resource.name}",
                        f"[{policy}] {message}",
                    )
    return result
