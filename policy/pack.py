"""Wraps the pure policies of policy/policies.py as pulumi-policy ResourceValidationPolicy
objects."""

from __future__ import annotations

from collections.abc import Callable

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from policy.policies import POLICIES, PolicySpec, StackInfo

PACK_NAME = "gpu-inference"
PROJECT = "gpu-inference"
PRODUCTION_STACK_NAMES = frozenset({"prod", "production"})


def current_stack() -> StackInfo:
    """The stack being previewed. `production` comes from the stack's `gpu-inference:production`
    config (the key infra/config.py reads); when the CLI hands the pack no config, a stack named
    prod/production counts as production, so the stricter policies apply rather than silently
    not."""
    name = pulumi.get_stack()
    flag = pulumi.Config(PROJECT).get_bool("production")
    production = flag if flag is not None else name in PRODUCTION_STACK_NAMES
    return StackInfo(name=name, production=production)


def _validator(
    spec: PolicySpec, stack_info: Callable[[], StackInfo]
) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if spec.resource_types is not None and args.resource_type not in spec.resource_types:
            return
        for message in spec.validate(args.resource_type, args.props, stack_info(), args.urn):
            report_violation(message, args.urn)

    return validate


def resource_policies(
    stack_info: Callable[[], StackInfo] = current_stack,
) -> list[Policy]:
    """One mandatory ResourceValidationPolicy per policy: a violation fails the preview."""
    return [
        ResourceValidationPolicy(
            name=spec.name,
            description=spec.description,
            validate=_validator(spec, stack_info),
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for spec in POLICIES
    ]
