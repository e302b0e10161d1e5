"""Upstream Helm charts at the versions pinned in infra/versions.py."""

from __future__ import annotations

from typing import Any

import pulumi_kubernetes as k8s

from infra import versions


def chart_args(
    chart: versions.HelmChart, namespace: str, values: dict[str, Any]
) -> k8s.helm.v4.ChartArgs:
    """A pinned upstream chart, rendered by helm.v4.Chart so the preview shows every object.

    The release is named after the chart so in-cluster names (Services, DaemonSets) are the chart's
    own.
    """
    return k8s.helm.v4.ChartArgs(
        chart=chart.chart,
        name=chart.chart,
        version=chart.version,
        namespace=namespace,
        repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=chart.repository),
        values=values,
    )
