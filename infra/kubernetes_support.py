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
goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from infra import versions
from infra.config import PROJECT, ConfigError, StackConfig

KEY: Final = f"{PROJECT}:kubernetesSupportType"
STANDARD: Final = "STANDARD_SUPPORT"
EXTENDED: Final = "EXTENDED_SUPPORT"


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


def _minors(calendar: Sequence[EksVersion], status: str) -> str:
    found = sorted(
        (v.version for v in calendar if v.status == status),
        key=lambda minor: tuple(int(part) for part in minor.split(".")),
    )
    return ", ".join(found) or "none"


def check_support(
    calendar: Sequence[EksVersion], support_type: str, stack_file: str, minor: str
) -> str:
    """The report line for the pinned minor; ConfigError when the stack cannot run on it."""
    move = (
        f"move infra/versions.py KUBERNETES_VERSION (with the cluster-autoscaler of that minor) "
        f"to one EKS supports as standard: {_minors(calendar, STANDARD)}"
    )
    row = next((v for v in calendar if v.version == minor), None)
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


def check(cfg: StackConfig) -> list[str]:
    """Reads the calendar and checks the pinned minor; the report lines it also logged."""
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
        return [line]
    line = check_support(
        calendar, cfg.cluster.support_type, cfg.stack_file, cfg.cluster.kubernetes_version
    )
    pulumi.log.info(line)
    return [line]
