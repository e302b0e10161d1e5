"""Whether EKS still supports the pinned Kubernetes minor the way the stack asks, read at preview.

The minor is pinned in infra/versions.py; time moves it out of standard support. What EKS then
does depends on the cluster's `upgradePolicy.supportType` (the `kubernetesSupportType` key): with
STANDARD "your EKS cluster will automatically upgrade to the next supported Kubernetes version in
standard support"; with EXTENDED it stays on its minor, at the extended-support price, until
extended support ends (EKS user guide, "Manage EKS extended support"). A STANDARD cluster past
standard support would be upgraded under the stack, and the next `pulumi up` would try to take it
back to the pinned minor, which EKS cannot do. So the preview stops, naming the minors EKS
supports, unless the stack opts into EXTENDED; and a minor EKS no longer offers stops every stack.

The calendar is the account's own: EKS DescribeClusterVersions through
`aws.eks.get_cluster_versions` (pulumi-aws 7.51: each row's `version_status` is STANDARD_SUPPORT,
EXTENDED_SUPPORT or UNSUPPORTED), a synchronous invoke made before any resource exists, like
infra/preflight.py's. It needs `eks:DescribeClusterVersions`; without it the preview warns and
goes on. It is read once, here; the cost (infra/cost.py) gets the pinned minor's row from `check`.

The arguments, as the data source passes them (terraform-provider-aws
internal/service/eks/cluster_versions_data_source.go, the version with `include_all` and
`version_status` that pulumi-aws 7.51's schema has: `flex.Expand` of its model into
DescribeClusterVersionsInput, fields matched by name):
- `cluster_type="eks"`: the only type the API documents ("Currently, the only valid value is
  `eks`", the pulumi-aws docstring);
- `include_all=True`: without it EKS lists only the minors it still supports (what
  awslabs/amazon-eks-ami #2143 shows `aws eks describe-cluster-versions` answering: 1.32 to 1.25 in
  February 2025, when 1.24 had left extended support), and an unsupported pin should be named with
  its end date, not as unknown;
- not `cluster_versions_only`: its model field (`ClusterVersionsOnly`) matches no field of the
  API's input, while the model's computed `ClusterVersions` list takes the input's
  `clusterVersions` name, so the filter never reaches EKS and every minor comes back. The program
  picks the pinned minor's row itself.

Time moves the pin towards the end of standard support; within `WARN_DAYS` of it the preview warns,
naming the date and what to do, while there is still time to do it in a normal change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

import pulumi
import pulumi_aws as aws

from infra import versions
from infra.config import PROJECT, ConfigError, StackConfig

KEY: Final = f"{PROJECT}:kubernetesSupportType"
STANDARD: Final = "STANDARD_SUPPORT"
EXTENDED: Final = "EXTENDED_SUPPORT"
WARN_DAYS: Final = 90
"""The preview warns when fewer days than this are left of the support the pinned minor is in: a
minor upgrade (cluster-autoscaler with it, one minor at a time) fits in that time."""


@dataclass(frozen=True)
class EksVersion:
    """One row of EKS's version calendar."""

    version: str
    status: str
    end_of_standard_support: str
    end_of_extended_support: str


def read_calendar() -> list[EksVersion]:
    """Every minor EKS knows, unsupported ones included (they name the end dates)."""
    result = aws.eks.get_cluster_versions(cluster_type="eks", include_all=True)
    return [
        EksVersion(
            version=row.cluster_version,
            status=row.version_status,
            end_of_standard_support=row.end_of_standard_support_date[:10],
            end_of_extended_support=row.end_of_extended_support_date[:10],
        )
        for row in result.cluster_versions
    ]


@dataclass(frozen=True)
class Support:
    """What `check` read: the report lines, and the pinned minor's row for the cost."""

    lines: list[str]
    pinned: EksVersion | None
    """None: the calendar was unreadable."""


def _key(minor: str) -> tuple[int, ...]:
    return tuple(int(part) for part in minor.split("."))


def _minors(calendar: Sequence[EksVersion], status: str) -> str:
    found = sorted((v.version for v in calendar if v.status == status), key=_key)
    return ", ".join(found) or "none"


def check_support(
    calendar: Sequence[EksVersion], support_type: str, stack_file: str, minor: str
) -> str:
    """The report line for the pinned minor; ConfigError when the stack cannot run on it."""
    move = (
        f"move infra/versions.py KUBERNETES_VERSION (with the cluster-autoscaler of that minor) "
        f"to one EKS supports as standard: {_minors(calendar, STANDARD)}"
    )
    row = pinned_row(calendar, minor)
    if row is None or row.status not in (STANDARD, EXTENDED):
        ended = f" since {row.end_of_extended_support}" if row else ""
        raise ConfigError(
            stack_file,
            KEY,
            support_type,
            f"none: EKS no longer supports Kubernetes {minor}{ended} (the minor pinned in "
            f"infra/versions.py); {move}",
        )
    if row.status == EXTENDED and support_type != "EXTENDED":
        raise ConfigError(
            stack_file,
            KEY,
            support_type,
            f"EXTENDED only: Kubernetes {minor} (pinned in infra/versions.py) left EKS standard "
            f"support on {row.end_of_standard_support}, and a STANDARD cluster is upgraded by EKS "
            f"under the stack. Set kubernetesSupportType: EXTENDED to stay on {minor} until "
            f"{row.end_of_extended_support} at the extended-support price, or {move}",
        )
    return (
        f"Kubernetes {minor}: EKS {row.status} (standard until {row.end_of_standard_support}, "
        f"extended until {row.end_of_extended_support}); kubernetesSupportType {support_type}"
    )


def pinned_row(calendar: Sequence[EksVersion], minor: str) -> EksVersion | None:
    return next((v for v in calendar if v.version == minor), None)


def ending_soon(
    calendar: Sequence[EksVersion], support_type: str, minor: str, today: date
) -> str | None:
    """A warning when the support the pinned minor is in ends within WARN_DAYS of `today`."""
    row = pinned_row(calendar, minor)
    if row is None or row.status not in (STANDARD, EXTENDED):
        return None
    standard = row.status == STANDARD
    ends = row.end_of_standard_support if standard else row.end_of_extended_support
    left = (date.fromisoformat(ends) - today).days
    if left >= WARN_DAYS:
        return None
    newer = _minors([v for v in calendar if _key(v.version) > _key(minor)], STANDARD)
    move = (
        f"move infra/versions.py KUBERNETES_VERSION and the cluster-autoscaler chart to the next "
        f"minor (newer minors in EKS standard support: {newer}; one minor per `pulumi up`)"
    )
    if not standard:
        then = "EKS upgrades the cluster under the stack and the preview stops"
    elif support_type == "EXTENDED":
        then = "the control plane is billed at the extended-support rate"
    else:
        then = (
            "EKS upgrades the cluster under the stack (kubernetesSupportType STANDARD) and the "
            "preview stops until you move the pin or set kubernetesSupportType: EXTENDED"
        )
    kind = "standard" if standard else "extended"
    return (
        f"Kubernetes {minor} (pinned in infra/versions.py) leaves EKS {kind} support on {ends}, "
        f"in {max(left, 0)} days: then {then}; {move}"
    )


def check(cfg: StackConfig, today: date | None = None) -> Support:
    """Reads the calendar once and checks the pinned minor; the report lines it also logged and
    the pinned minor's row."""
    minor = cfg.cluster.kubernetes_version
    try:
        calendar = read_calendar()
    # Most often a role without eks:DescribeClusterVersions: reported, not fatal (as quotas are).
    except Exception as error:
        line = (
            f"could not read EKS's Kubernetes version calendar: {error}; whether "
            f"{versions.KUBERNETES_VERSION} is still in standard support is not checked (grant "
            "eks:DescribeClusterVersions to see it checked here)"
        )
        pulumi.log.warn(line)
        return Support([line], None)
    line = check_support(calendar, cfg.cluster.support_type, cfg.stack_file, minor)
    pulumi.log.info(line)
    lines = [line]
    warning = ending_soon(
        calendar, cfg.cluster.support_type, minor, today or datetime.now(UTC).date()
    )
    if warning is not None:
        pulumi.log.warn(warning)
        lines.append(warning)
    return Support(lines, pinned_row(calendar, minor))
