"""Upstream Helm charts at the versions pinned in infra/versions.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra import versions

APISERVICE_V1 = k8s.helm.v4.PostRendererArgs(
    command="sed",
    args=[
        "-e",
        "s#^apiVersion: apiregistration.k8s.io/v1beta1$#apiVersion: apiregistration.k8s.io/v1#",
    ],
)
"""Rewrites APIService objects a chart renders as apiregistration.k8s.io/v1beta1 (removed in
Kubernetes 1.22) to v1, whose schema is the same.

prometheus-adapter picks the version with `.Capabilities.APIVersions.Has
"apiregistration.k8s.io/v1"`; helm.v4.Chart only asks the cluster for its API versions when the
provider can reach it (setKubeVersionAndAPIVersions in pulumi-kubernetes
provider/pkg/provider/helm/v4/chart.go), so the first preview of a new stack would show v1beta1
while `pulumi up` creates v1. The provider pipes the rendered manifest through this command (its
`postRenderer` input; `sed` is POSIX, on every machine that runs `pulumi`)."""


def deleted_defaults(*paths: str) -> pulumi.StringAsset:
    """A values file that deletes chart defaults (Helm: a key set to null is removed).

    Nulls in the `values` map never reach Helm: the Python SDK drops None map entries
    (pulumi/pulumi#12178), so the chart default would stay. A values file is parsed by the
    provider itself (MergeValues in pulumi-kubernetes provider/pkg/helm/values.go, sigs.k8s.io/yaml
    keeps nulls) and merged before `values`, so its nulls reach Helm's coalescing."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = None
    return pulumi.StringAsset(yaml.safe_dump(tree, sort_keys=True))


def chart_args(
    chart: versions.HelmChart,
    namespace: str,
    values: dict[str, Any],
    *,
    delete: Sequence[str] = (),
    post_renderer: k8s.helm.v4.PostRendererArgs | None = None,
) -> k8s.helm.v4.ChartArgs:
    """A pinned upstream chart, rendered by helm.v4.Chart so the preview shows every object.

    The release is named after the chart so in-cluster names (Services, DaemonSets) are the chart's
    own. `delete` lists dotted values paths whose chart defaults must go (see deleted_defaults).
    """
    return k8s.helm.v4.ChartArgs(
        chart=chart.chart,
        name=chart.chart,
        version=chart.version,
        namespace=namespace,
        repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=chart.repository),
        values=values,
        value_yaml_files=[deleted_defaults(*delete)] if delete else None,
        post_renderer=post_renderer,
    )
