"""`make check`'s version-table check: vendored charts against the table and the cluster's minor,
the image's Python/torch/CUDA against CI, PyTorch's release matrix and the GPU AMI's driver."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import shutil
from pathlib import Path

import helm_python as helm
import pytest

import checks.__main__ as gate
from checks.report import CheckResult
from checks.versions import ImageTable, check_charts, check_image, check_versions
from infra import versions
from rehearsal.mockengine import ROOT


def test_the_committed_table_passes_and_make_check_runs_it() -> None:
    result = check_versions()
    assert result.passed, result.render()
    assert result.inspected == len(versions.HELM_CHARTS) + 1
    assert "check_versions" in inspect.getsource(gate.main)


def autoscaler_archive(folder: Path, app_version: str) -> versions.HelmChart:
    """A cluster-autoscaler chart of a given appVersion, packaged as `helm package` would."""
    (folder / "src").mkdir()
    helm.Chart.create("cluster-autoscaler", folder / "src")
    (folder / "src" / "cluster-autoscaler" / "Chart.yaml").write_text(
        "apiVersion: v2\nname: cluster-autoscaler\nversion: 9.99.0\n"
        f"appVersion: {app_version}\ntype: application\n"
    )
    helm.Chart.load(folder / "src" / "cluster-autoscaler").save(folder)
    archive = folder / "cluster-autoscaler-9.99.0.tgz"
    return dataclasses.replace(
        versions.CLUSTER_AUTOSCALER,
        version="9.99.0",
        app_version=app_version,
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
    )


@pytest.mark.parametrize(("app_version", "passes"), [("1.34.1", False), ("1.35.0", True)])
def test_a_chart_whose_app_version_minor_differs_from_the_clusters_fails(
    tmp_path: Path, app_version: str, passes: bool
) -> None:
    """The issue's case: an autoscaler built for one minor on a cluster of another."""
    pin = autoscaler_archive(tmp_path, app_version)
    result = CheckResult("charts")
    check_charts(result, [pin], "1.35", tmp_path)
    assert result.passed is passes, result.render()
    if not passes:
        [finding] = result.findings
        assert finding.subject == "chart cluster-autoscaler 9.99.0"
        assert "appVersion 1.34.1 is for Kubernetes 1.34, the cluster runs 1.35" in finding.message


def test_bumping_the_cluster_alone_fails_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """KUBERNETES_VERSION moved without the autoscaler: the real table, read when the gate runs."""
    monkeypatch.setattr(versions, "KUBERNETES_VERSION", "1.36")
    result = check_versions()
    assert not result.passed
    subjects = {f.subject for f in result.findings}
    pin = versions.CLUSTER_AUTOSCALER
    assert f"chart {pin.chart} {pin.version}" in subjects
    assert f"{versions.GPU_AMI_TYPE} at Kubernetes 1.36" in subjects, "no driver known for 1.36"


def test_an_app_version_or_bytes_other_than_the_tables_fail(tmp_path: Path) -> None:
    pin = autoscaler_archive(tmp_path, "1.35.0")
    stale = dataclasses.replace(pin, app_version="1.35.x", sha256="0" * 64)
    result = CheckResult("charts")
    check_charts(result, [stale], "1.35", tmp_path)
    messages = [f.message for f in result.findings]
    assert any(m.startswith("cluster-autoscaler-9.99.0.tgz has sha256") for m in messages)
    assert "Chart.yaml appVersion is '1.35.0', the table says '1.35.x'" in messages


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The files the image check reads, copied so a test can change them."""
    for name in ("Dockerfile", "Makefile", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    for tree in (".github", "infra"):
        shutil.copytree(ROOT / tree, tmp_path / tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "checks").mkdir()
    shutil.copy(ROOT / "checks" / "checkov-skips.txt", tmp_path / "checks")
    return tmp_path


def image_findings(root: Path, **table: object) -> list[str]:
    result = CheckResult("image")
    check_image(result, dataclasses.replace(ImageTable(), **table), root)
    return [f"{f.subject}: {f.message}" for f in result.findings]


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new))


def test_the_copied_files_pass(repo: Path) -> None:
    assert image_findings(repo) == []


def test_the_old_cu128_index_fails(repo: Path) -> None:
    replace_in(repo / "Dockerfile", "whl/cu130", "whl/cu128")
    [finding] = image_findings(repo)
    assert "TORCH_INDEX_URL https://download.pytorch.org/whl/cu128" in finding


def test_a_cuda_pytorch_does_not_build_torch_for_fails(repo: Path) -> None:
    replace_in(repo / "Dockerfile", "whl/cu130", "whl/cu128")
    findings = image_findings(repo, cuda="12.8")
    assert (
        "infra/versions.py: PyTorch publishes torch 2.13 for CUDA 12.6, 13.0, 13.2, not 12.8"
        in findings
    )


def test_a_driver_older_than_the_images_cuda_needs_fails(repo: Path) -> None:
    [finding] = image_findings(repo, ami_driver={versions.KUBERNETES_VERSION: "570.172.08"})
    assert "NVIDIA driver 570.172.08 is older than the 580.65.06 that CUDA 13.0" in finding


def test_an_image_python_other_than_cis_fails(repo: Path) -> None:
    replace_in(repo / "Dockerfile", "python:3.11-slim-trixie@", "python:3.12-slim-trixie@")
    [finding] = image_findings(repo)
    assert "PYTHON_IMAGE python:3.12-slim-trixie@sha256:" in finding
    assert finding.endswith("is not Python 3.11")


def test_a_ci_job_on_another_python_fails(repo: Path) -> None:
    replace_in(repo / ".github" / "workflows" / "test.yml", '"3.11"', '"3.12"')
    [finding] = image_findings(repo)
    assert "/.github/workflows/test.yml job make-test: setup-python 3.12, the image runs" in finding


@pytest.mark.parametrize(
    "path", ["README.md", "infra/scaler.py", "checks/checkov-skips.txt", "Dockerfile"]
)
def test_prose_naming_another_python_image_fails(repo: Path, path: str) -> None:
    """The base image moved to 3.11 while three places still said python:3.12."""
    with (repo / path).open("a") as handle:
        handle.write("\n# runs on python:3.12-slim\n")
    [finding] = image_findings(repo)
    assert f"{path}:" in finding
    assert finding.endswith("names python:3.12, the image runs Python 3.11")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            "TORCH_INDEX ?= https://download.pytorch.org/whl/cpu",
            "TORCH_INDEX ?= https://pypi.org/simple",
        ),
        ("--extra-index-url '$(TORCH_INDEX)' '$(TORCH_SPEC)'", "'$(TORCH_SPEC)'"),
    ],
)
def test_make_setup_without_the_cpu_index_fails(repo: Path, old: str, new: str) -> None:
    """`torch==2.13.0` from PyPI alone is the CUDA build on Linux (GBs) on a fresh machine."""
    replace_in(repo / "Makefile", old, new)
    [finding] = image_findings(repo)
    assert "a fresh Linux machine gets PyPI's CUDA build of torch" in finding


def test_make_setup_installing_another_torch_fails(repo: Path) -> None:
    replace_in(repo / "Makefile", "TORCH_SPEC ?= torch==2.13.0", "TORCH_SPEC ?= torch==2.12.0")
    [finding] = image_findings(repo)
    assert finding.endswith("TORCH_SPEC torch==2.12.0, the image has 2.13.0")
