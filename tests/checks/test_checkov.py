"""checkov over a manifest and a Dockerfile with known problems, and the reviewed skip list.

One checkov run serves every assertion (checkov takes seconds to start)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from checks.checkov_scan import SKIPS_FILE, CheckResult, Target, check_checkov, load_skips

PRIVILEGED_LATEST = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "bad", "namespace": "inference"},
    "spec": {
        "selector": {"matchLabels": {"app": "bad"}},
        "template": {
            "metadata": {"labels": {"app": "bad"}},
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "registry.example/server:latest",
                        "securityContext": {"privileged": True},
                    }
                ]
            },
        },
    },
}
SKIPS = """\
# comments and blank lines are ignored

CKV_K8S_14  Deployment.inference.*  Accepted here: the latest tag is the finding under test.
CKV_K8S_99  Deployment.inference.*  A skip that nothing fails any more, so the gate calls it stale.
CKV_K8S_8 Deployment.* because
"""


@pytest.fixture(scope="module")
def result(checkov: Path, tmp_path_factory: pytest.TempPathFactory) -> CheckResult:
    root = tmp_path_factory.mktemp("checkov")
    manifests = root / "manifests"
    manifests.mkdir()
    (manifests / "inference-deployment-bad.yaml").write_text(yaml.safe_dump(PRIVILEGED_LATEST))
    dockerfile = root / "Dockerfile"
    dockerfile.write_text('FROM python:3.11-slim\nCMD ["python"]\n')
    skips = root / "skips.txt"
    skips.write_text(SKIPS)
    return check_checkov(
        [
            Target(manifests, "kubernetes", "test manifests"),
            Target(dockerfile, "dockerfile", "Dockerfile"),
        ],
        skips,
    )


def _messages(result: CheckResult) -> str:
    return "\n".join(str(f) for f in result.findings)


def test_broken_manifest_fails_with_check_id_resource_and_file(result: CheckResult) -> None:
    assert not result.passed
    privileged = [f for f in result.findings if "CKV_K8S_16" in f.message]
    assert privileged, _messages(result)
    assert "Container should not be privileged" in privileged[0].message
    assert "[Deployment.inference.bad]" in privileged[0].message
    assert privileged[0].subject.split(":")[0].endswith("manifests/inference-deployment-bad.yaml")


def test_broken_dockerfile_fails(result: CheckResult) -> None:
    docker = [f for f in result.findings if "CKV_DOCKER_3" in f.message]
    assert docker, _messages(result)
    assert "Ensure that a user for the container has been created" in docker[0].message


def test_skips_apply_by_check_and_resource_glob(result: CheckResult) -> None:
    assert "CKV_K8S_14" not in _messages(result)


def test_stale_and_malformed_skips_are_reported(result: CheckResult) -> None:
    assert any("stale skip CKV_K8S_99" in n for n in result.notes)
    assert any(
        "skip of CKV_K8S_8 needs a reason" in f.message and f.subject.endswith("skips.txt:5")
        for f in result.findings
    ), _messages(result)


def test_repository_skip_list_is_well_formed() -> None:
    parsed = CheckResult("skips")
    skips = load_skips(SKIPS_FILE, parsed)
    assert not parsed.findings, parsed.render()
    assert all(len(s.reason.split()) >= 8 for s in skips), "each skip needs a real reason"


def test_missing_checkov_or_target_fails_loudly(tmp_path: Path) -> None:
    missing = check_checkov([Target(tmp_path / "nope", "kubernetes", "absent manifests")])
    assert not missing.passed
    assert "missing" in _messages(missing) or "checkov not found" in _messages(missing)


def test_chart_objects_are_scanned_and_fail_without_their_skips(
    checkov: Path, tmp_path: Path
) -> None:
    """The rendered DCGM exporter DaemonSet, with the reviewed skips minus the digest one."""
    from rehearsal import synth
    from rehearsal.mockengine import run_stack

    synth.write(run_stack("dev"), "dev", tmp_path / "dev")
    dcgm = tmp_path / "dev" / "manifests" / "charts" / "gpu-system-dcgm-exporter"
    skips = tmp_path / "skips.txt"
    skips.write_text(
        "\n".join(
            line
            for line in SKIPS_FILE.read_text().splitlines()
            if not line.startswith("CKV_K8S_43  DaemonSet.gpu-system.*")
        )
    )
    scanned = check_checkov([Target(dcgm, "kubernetes", "dcgm chart objects")], skips)
    assert not scanned.passed
    [finding] = scanned.findings
    assert "CKV_K8S_43" in str(finding)
    assert "DaemonSet.gpu-system.dcgm-exporter" in str(finding)
