"""The preview reads EKS's version calendar and stops a stack whose pinned Kubernetes minor is
past the support it asks for (infra/kubernetes_support.py), before anything is registered."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pulumi.runtime import MockCallArgs

from infra import kubernetes_support, versions
from infra.config import ConfigError
from rehearsal.mockengine import (
    AwsLikeMocks,
    Inventory,
    MockAccount,
    calendar_with,
    eks_fixture,
    load_stack_config,
    run_function,
    run_stack,
)

CLUSTER = "aws:eks/cluster:Cluster"
MINOR = versions.KUBERNETES_VERSION


def account(status: str) -> MockAccount:
    """Today's account, with the pinned minor moved to another status (time passing)."""
    return MockAccount(cluster_versions=calendar_with(MINOR, status))


def support_type(inventory: Inventory) -> str:
    policy: dict[str, str] = inventory.one(CLUSTER).inputs["upgradePolicy"]
    return policy["supportType"]


def test_todays_calendar_has_the_pinned_minor_in_standard_support() -> None:
    """The fixture is EKS's calendar of 2026-12-07: the pin must be in standard support there."""
    [row] = [r for r in eks_fixture()["clusterVersions"] if r["clusterVersion"] == MINOR]
    assert row["versionStatus"] == kubernetes_support.STANDARD


def test_the_committed_stacks_run_with_standard_support(inventory: Inventory) -> None:
    assert support_type(inventory) == "STANDARD"
    assert inventory.one(CLUSTER).inputs["version"] == MINOR


def test_a_minor_past_standard_support_stops_the_preview_naming_the_supported_minors() -> None:
    with pytest.raises(ConfigError) as caught:
        run_stack("dev", account=account(kubernetes_support.EXTENDED))
    error = caught.value
    assert error.key == "gpu-inference:kubernetesSupportType"
    assert error.value == "STANDARD"
    assert f"Kubernetes {MINOR} (pinned in infra/versions.py) left EKS standard support" in str(
        error
    )
    assert "one EKS supports as standard: 1.36" in str(error)
    assert "kubernetesSupportType: EXTENDED" in str(error)
    assert caught.value.registered_resources == ()  # type: ignore[attr-defined]


def test_opting_into_extended_support_keeps_the_minor_and_tells_eks() -> None:
    extended = run_stack(
        "dev", {"kubernetesSupportType": "EXTENDED"}, account=account(kubernetes_support.EXTENDED)
    )
    assert support_type(extended) == "EXTENDED"
    assert extended.one(CLUSTER).inputs["version"] == MINOR


def test_a_minor_eks_no_longer_offers_stops_every_stack() -> None:
    for overrides in ({}, {"kubernetesSupportType": "EXTENDED"}):
        with pytest.raises(ConfigError, match=f"EKS no longer supports Kubernetes {MINOR}"):
            run_stack("prod", overrides, account=account("UNSUPPORTED"))
    gone = MockAccount(
        cluster_versions=tuple(
            r for r in eks_fixture()["clusterVersions"] if r["clusterVersion"] != MINOR
        )
    )
    with pytest.raises(ConfigError, match=r"move infra/versions\.py KUBERNETES_VERSION"):
        run_stack("dev", account=gone)


def test_without_eks_describe_cluster_versions_the_preview_warns_and_goes_on() -> None:
    cfg = load_stack_config("dev")
    lines: list[str] = []
    run_function(
        lambda: lines.extend(kubernetes_support.check(cfg).lines),
        account=MockAccount(denied=frozenset({"eks:DescribeClusterVersions"})),
    )
    [line] = lines
    assert "could not read EKS's Kubernetes version calendar" in line
    assert "eks:DescribeClusterVersions" in line


def test_the_report_line_names_the_dates() -> None:
    calendar = [
        kubernetes_support.EksVersion(
            MINOR, kubernetes_support.STANDARD, "2027-03-27", "2028-03-27"
        )
    ]
    line = kubernetes_support.check_support(calendar, "STANDARD", "Pulumi.dev.yaml", MINOR)
    assert line == (
        f"Kubernetes {MINOR}: EKS STANDARD_SUPPORT (standard until 2027-03-27, extended until "
        "2028-03-27); kubernetesSupportType STANDARD"
    )


def test_add_on_versions_follow_the_cluster_minor(inventory: Inventory) -> None:
    """get_addon_version is asked for the cluster's minor; the mock answers per minor, as AWS."""
    addons = {a.inputs["addonName"]: a.inputs for a in inventory.of_type("aws:eks/addon:Addon")}
    assert addons["kube-proxy"]["addonVersion"].startswith(f"v{MINOR}.")
    expected = eks_fixture()["addonVersions"][MINOR]
    assert {name: a["addonVersion"] for name, a in addons.items()} == expected


def test_the_mock_account_answers_add_on_versions_per_minor_and_refuses_others() -> None:
    mocks = AwsLikeMocks("us-west-2")

    def ask(minor: str) -> Any:
        args = {"addonName": "kube-proxy", "kubernetesVersion": minor, "mostRecent": False}
        return mocks.call(MockCallArgs("aws:eks/getAddonVersion:getAddonVersion", args, ""))

    assert ask(MINOR)["version"] == eks_fixture()["addonVersions"][MINOR]["kube-proxy"]
    assert ask("1.34")["version"].startswith("v1.34.")
    _, [(_, reason)] = ask("1.99")
    assert reason == "ResourceNotFoundException: no kube-proxy version for Kubernetes 1.99"


# --- One read, with the arguments the data source passes on ---------------------------------------

VERSIONS = "aws:eks/getClusterVersions:getClusterVersions"


def test_the_calendar_is_read_once_and_the_cost_gets_the_pinned_row() -> None:
    """Before, the cost asked again with `cluster_versions_only`, which the data source never
    passes on: it took the first row of the whole calendar (1.36, in standard support) as the
    pinned minor's, and left the extended-support surcharge out of the floor. The cost test of
    extended support (tests/infra/test_cost.py) checks the surcharge; here, the single read."""
    inventory = run_stack(
        "dev", {"kubernetesSupportType": "EXTENDED"}, account=account(kubernetes_support.EXTENDED)
    )
    assert inventory.invoke_counts[VERSIONS] == 1
    line = inventory.outputs["hourlyCost"]["lines"]["controlPlane"]
    assert line["onDemandRate"][0] == line["onDemandRate"][1]  # billed in the floor too


def ask_versions(**args: Any) -> list[str]:
    mocks = AwsLikeMocks("us-west-2")
    answer = mocks.call(MockCallArgs(VERSIONS, args, ""))
    return [row["clusterVersion"] for row in answer["clusterVersions"]]


def test_the_mock_calendar_answers_as_the_data_source_does() -> None:
    every = [row["clusterVersion"] for row in eks_fixture()["clusterVersions"]]
    supported = [
        row["clusterVersion"]
        for row in eks_fixture()["clusterVersions"]
        if row["versionStatus"] != "UNSUPPORTED"
    ]
    assert ask_versions(clusterType="eks", includeAll=True) == every
    assert ask_versions(clusterType="eks") == supported  # EKS leaves out what it dropped
    assert ask_versions(defaultOnly=True) == [MINOR]
    assert ask_versions(versionStatus="STANDARD_SUPPORT") == ["1.36", MINOR]
    assert ask_versions(clusterType="eks-local-outposts", includeAll=True) == []
    # Never passed on by the data source: every supported minor comes back.
    assert ask_versions(clusterVersionsOnlies=["1.34"]) == supported


# --- Warned ahead of the end of support ----------------------------------------------------------


def calendar(status: str = kubernetes_support.STANDARD) -> list[kubernetes_support.EksVersion]:
    return [
        kubernetes_support.EksVersion(
            "1.36", kubernetes_support.STANDARD, "2027-08-18", "2028-08-18"
        ),
        kubernetes_support.EksVersion(MINOR, status, "2027-03-27", "2028-03-27"),
    ]


def test_fewer_than_90_days_of_standard_support_warn_naming_the_date_and_the_move() -> None:
    warning = kubernetes_support.ending_soon(calendar(), "STANDARD", MINOR, date(2027, 1, 1))
    assert warning is not None
    assert warning.startswith(
        f"Kubernetes {MINOR} (pinned in infra/versions.py) leaves EKS standard support on "
        "2027-03-27, in 85 days: then EKS upgrades the cluster under the stack"
    )
    assert "move infra/versions.py KUBERNETES_VERSION and the cluster-autoscaler chart" in warning
    assert "newer minors in EKS standard support: 1.36;" in warning
    assert "kubernetesSupportType: EXTENDED" in warning
    assert kubernetes_support.ending_soon(calendar(), "STANDARD", MINOR, date(2026, 12, 27)) is None


def test_the_warning_says_what_each_support_type_faces() -> None:
    billed = kubernetes_support.ending_soon(calendar(), "EXTENDED", MINOR, date(2027, 3, 1))
    assert billed is not None
    assert "billed at the extended-support rate" in billed
    extended = calendar(kubernetes_support.EXTENDED)
    late = kubernetes_support.ending_soon(extended, "EXTENDED", MINOR, date(2028, 1, 1))
    assert late is not None
    assert "leaves EKS extended support on 2028-03-27, in 86 days" in late
    assert kubernetes_support.ending_soon(extended, "EXTENDED", MINOR, date(2027, 6, 1)) is None


def test_the_preview_warns_with_the_accounts_calendar() -> None:
    cfg = load_stack_config("dev")
    found: list[kubernetes_support.Support] = []
    run_function(lambda: found.append(kubernetes_support.check(cfg, today=date(2027, 2, 1))))
    (support,) = found
    assert support.pinned is not None
    assert support.pinned.version == MINOR
    assert len(support.lines) == 2
    assert "in 54 days" in support.lines[1]
    found.clear()
    run_function(lambda: found.append(kubernetes_support.check(cfg, today=date(2026, 12, 7))))
    assert len(found[0].lines) == 1
