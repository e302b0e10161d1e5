"""The deploy role's permissions: derived from what the program registers and reads, and the
README's list is exactly that (rehearsal/permissions.py)."""

from __future__ import annotations

import re

import pytest

from rehearsal import permissions
from rehearsal.mockengine import ROOT, Inventory, Resource

README = ROOT / "README.md"


@pytest.fixture(scope="module")
def variants() -> list[Inventory]:
    return permissions.variant_inventories()


@pytest.fixture(scope="module")
def runs(inventories: dict[str, Inventory], variants: list[Inventory]) -> list[Inventory]:
    """What `python -m rehearsal.permissions` derives from: each committed stack (conftest's
    session runs) and each variant."""
    assert sorted(inventories) == sorted(permissions.stacks())
    return [*inventories.values(), *variants]


@pytest.fixture(scope="module")
def derived(runs: list[Inventory]) -> set[str]:
    return permissions.actions_of(runs)


def readme_actions() -> set[str]:
    text = README.read_text()
    found = re.search(
        r"<!-- deploy-permissions: [^\n]*-->\n(.*?)\n<!-- /deploy-permissions -->", text, re.S
    )
    assert found, "README.md has no deploy-permissions block"
    return permissions.parse_markdown(found.group(1).splitlines())


def test_the_readme_lists_exactly_the_derived_permissions(derived: set[str]) -> None:
    listed = readme_actions()
    assert not derived - listed, f"missing from README.md: {sorted(derived - listed)}"
    assert not listed - derived, f"listed in README.md but not derived: {sorted(listed - derived)}"


def test_the_scale_from_zero_tags_and_service_linked_roles_are_covered(derived: set[str]) -> None:
    # Missing from the README before: the autoscaler's node-template tags on the Auto Scaling
    # groups, and the service-linked roles EKS creates for an account's first cluster.
    assert {
        "autoscaling:CreateOrUpdateTags",
        "autoscaling:DeleteTags",
        "iam:CreateServiceLinkedRole",
        "iam:PassRole",
        "ec2:DeleteVolume",
        "ecr:PutImage",
    } <= derived


def test_the_variant_reaches_calls_the_committed_stacks_do_not_make(
    inventories: dict[str, Inventory], variants: list[Inventory]
) -> None:
    committed = {t for inventory in inventories.values() for t in inventory.invokes}
    (variant,) = variants
    assert "aws:ec2/getVpc:getVpc" in set(variant.invokes) - committed
    assert "aws:route53/record:Record" in {r.type for r in variant.resources}


def test_a_new_aws_call_fails_until_it_is_mapped() -> None:
    bucket = Resource(
        type="aws:s3/bucket:Bucket", name="b", urn="urn:b", inputs={}, provider=None, parent=None
    )
    inventory = Inventory(resources=(bucket,), outputs={}, invokes=("aws:sqs/getQueue:getQueue",))
    with pytest.raises(permissions.UnknownCallError) as caught:
        permissions.actions_of([inventory])
    message = str(caught.value)
    assert "resource type aws:s3/bucket:Bucket" in message
    assert "invoke aws:sqs/getQueue:getQueue" in message


def test_markdown_round_trips(derived: set[str]) -> None:
    assert permissions.parse_markdown(permissions.markdown(derived)) == derived
