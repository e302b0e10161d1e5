"""The policy pack (policy/policies.py) over each stack's resources under the mock engine: the same
validation `pulumi preview --policy-pack policy` runs, without the Pulumi CLI."""

from __future__ import annotations

from checks.report import CheckResult
from policy.policies import StackInfo, violations
from rehearsal.mockengine import PROJECT, run_stack, stack_config


def stack_info(stack: str) -> StackInfo:
    """Production or not, from the stack's own config (Pulumi.yaml default, then
    Pulumi.<stack>.yaml)."""
    values, _ = stack_config(stack)
    return StackInfo(name=stack, production=values.get(f"{PROJECT}:production") == "true")


def check_policies(stacks: list[str]) -> CheckResult:
    result = CheckResult(
        "policy pack on every resource the engine registers, chart objects included ("
        + ", ".join(stacks)
        + ")"
    )
    for stack in stacks:
        info = stack_info(stack)
        inventory = run_stack(stack)
        for resource in inventory.resources:
            result.inspected += 1
            found = violations(resource.type, resource.inputs, info, resource.urn)
            for policy, messages in found.items():
                for message in messages:
                    result.fail(
                        f"stack {stack}: {resource.type} {resource.name}", f"[{policy}] {message}"
                    )
    return result
