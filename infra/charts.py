"""Upstream Helm charts at the versions pinned in infra/versions.py, installed from the archives
vendored in `charts/`.

Both chart resources take a local archive as `chart` and then never reach a chart repository:
helm.v4.Chart resolves it with Helm's `ChartPathOptions.LocateChart` ("Order of resolution:
relative to current working directory", helm v3.20.2 pkg/action/install.go, which
pulumi-kubernetes v4.32.0 links: provider/go.mod, provider/pkg/helm/tool.go `locateChart`), and
helm.v3.Release with its copy of it, which looks for a local chart first whenever no repository is
set (provider/pkg/provider/helm_release.go `locateChart`/`localChart`). `version` is not consulted
for a local chart, so it is not passed; the archive is the version. pulumi-kubernetes 4.34.2's own
SDK documents both `chart` inputs as "Chart name to be installed. A path may be used."

The path is relative to the working directory, which the provider shares with the program: the
engine starts both in the `main` folder of Pulumi.yaml (`infra/`; pulumi/pulumi v3.259.0
pkg/engine/project.go `getPwdMain`, and plugin.go `ExecPlugin` sets `cmd.Dir` to that context's
`Pwd`). A relative path keeps the preview free of the checkout's location."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra import versions

CHARTS_DIR: Final = Path(__file__).resolve().parent.parent / "charts"
"""The vendored chart archives (README "Charts"). Nothing outside the clone is read."""


class ChartArchiveError(Exception):
    """A pinned chart's vendored archive is missing or holds other bytes than the table says."""


def archive(pin: versions.HelmChart) -> Path:
    return CHARTS_DIR / pin.archive_name


def sha256(path: Path) -> str:
    return _sha256(path, path.stat().st_mtime_ns)


@cache
def _sha256(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified_archive(pin: versions.HelmChart) -> Path:
    """The archive of a pin, refused unless its sha256 is the table's."""
    path = archive(pin)
    if not path.is_file():
        raise ChartArchiveError(
            f"chart {pin.chart} {pin.version} (pinned in infra/versions.py): no archive "
            f"{path.name} in {CHARTS_DIR}; `make charts` fetches it from {pin.repository}"
        )
    found = sha256(path)
    if found != pin.sha256:
        raise ChartArchiveError(
            f"chart {pin.chart} {pin.version}: {path} has sha256 {found}, infra/versions.py "
            f"pins {pin.sha256}; restore the file from git, or run `make charts` to compare it "
            "with the upstream archive"
        )
    return path


def check_archives() -> None:
    """Every pinned archive present with its pinned bytes; run before any resource exists."""
    for pin in versions.HELM_CHARTS:
        verified_archive(pin)


def chart_path(pin: versions.HelmChart) -> str:
    """The `chart` input of a chart resource: the verified archive, relative to the working
    directory (see the module docstring)."""
    return os.path.relpath(verified_archive(pin), Path.cwd())


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
    """A pinned upstream chart from its vendored archive, rendered by helm.v4.Chart so the preview
    shows every object.

    The release is named after the chart so in-cluster names (Services, DaemonSets) are the chart's
    own. `delete` lists dotted values paths whose chart defaults must go (see deleted_defaults).
    """
    return k8s.helm.v4.ChartArgs(
        chart=chart_path(chart),
        name=chart.chart,
        namespace=namespace,
        values=values,
        value_yaml_files=[deleted_defaults(*delete)] if delete else None,
        post_renderer=post_renderer,
    )
