"""The version table (infra/versions.py) against the files it pins and against itself.

Charts: each vendored archive is the table's bytes (sha256) and its Chart.yaml says the table's
name, version and appVersion; a chart released per Kubernetes minor (cluster-autoscaler) has the
cluster's minor. Image: the Dockerfile's Python, torch and CUDA index are the table's; PyTorch
publishes that torch for that CUDA; the NVIDIA driver of the GPU AMI at the pinned minor is new
enough for that CUDA; every CI job and mypy use the image's Python; `make setup` installs the same
torch. A bump that forgets one of them fails here, naming both sides.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from checks import tools
from checks.report import CheckResult
from infra import versions
from infra.charts import CHARTS_DIR, sha256

TORCH_INDEX: str = "https://download.pytorch.org/whl/cu{}"
_ARG = re.compile(r"^ARG\s+(\w+)=(\S+)", re.MULTILINE)
_TORCH_SPEC = re.compile(r"^TORCH_SPEC\s*\?=\s*torch==(\S+)", re.MULTILINE)
_TORCH_CPU_INDEX = re.compile(r"^TORCH_INDEX\s*\?=\s*(\S+)", re.MULTILINE)
CPU_TORCH_INDEX: str = "https://download.pytorch.org/whl/cpu"
"""Where `make setup` finds torch's CPU build (PyPI's Linux torch is the CUDA one, GBs)."""
_SETUP_TORCH = "--extra-index-url '$(TORCH_INDEX)' '$(TORCH_SPEC)'"
_PYTHON_IMAGE_MENTION = re.compile(r"python:(3\.\d+)")
PYTHON_IMAGE_TEXTS: tuple[str, ...] = ("README.md", "Dockerfile", "infra/*.py", "checks/*.txt")
"""Where the image's Python is named in prose and comments (`python:3.11-slim...`)."""


def _minor(version: str) -> str:
    return ".".join(version.lstrip("v").split(".")[:2])


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# --- Charts ---------------------------------------------------------------------------------------


def chart_problems(
    pin: versions.HelmChart, kubernetes_version: str, directory: Path
) -> Iterator[str]:
    archive = directory / pin.archive_name
    if not archive.is_file():
        yield f"no archive {pin.archive_name} in {tools.relative(directory)} (`make charts`)"
        return
    found = sha256(archive)
    if found != pin.sha256:
        yield f"{pin.archive_name} has sha256 {found}, the table pins {pin.sha256}"
    meta = helm.Chart.load(archive).metadata
    table = {"name": pin.chart, "version": pin.version, "appVersion": pin.app_version}
    for key, pinned in table.items():
        if str(meta.get(key)) != pinned:
            yield f"Chart.yaml {key} is {meta.get(key)!r}, the table says {pinned!r}"
    app_minor = _minor(str(meta.get("appVersion")))
    if pin.tracks_kubernetes and app_minor != kubernetes_version:
        yield (
            f"appVersion {meta.get('appVersion')} is for Kubernetes {app_minor}, the cluster runs "
            f"{kubernetes_version} (KUBERNETES_VERSION): {pin.chart} must be of the cluster's minor"
        )


def check_charts(
    result: CheckResult,
    pins: Sequence[versions.HelmChart] | None = None,
    kubernetes_version: str | None = None,
    directory: Path = CHARTS_DIR,
) -> None:
    minor = kubernetes_version or versions.KUBERNETES_VERSION
    for pin in versions.HELM_CHARTS if pins is None else pins:
        result.inspected += 1
        for problem in chart_problems(pin, minor, directory):
            result.fail(f"chart {pin.chart} {pin.version}", problem)


# --- The image ------------------------------------------------------------------------------------


def _table(name: str) -> Any:
    """A row of infra/versions.py read when a table is made (so a test can change the module)."""
    return field(default_factory=lambda: getattr(versions, name))


@dataclass(frozen=True)
class ImageTable:
    """The image rows of the version table (tests vary them)."""

    python: str = _table("PYTHON_VERSION")
    torch: str = _table("TORCH_VERSION")
    cuda: str = _table("TORCH_CUDA")
    torch_cuda_builds: Mapping[str, tuple[str, ...]] = _table("TORCH_CUDA_BUILDS")
    cuda_minimum_driver: Mapping[str, str] = _table("CUDA_MINIMUM_DRIVER")
    ami_driver: Mapping[str, str] = _table("GPU_AMI_NVIDIA_DRIVER")
    kubernetes_version: str = _table("KUBERNETES_VERSION")


def image_problems(table: ImageTable, root: Path) -> Iterator[tuple[str, str]]:
    """(subject, problem) for each way the image's inputs disagree with the table or the nodes."""
    dockerfile = root / "Dockerfile"
    args = dict(_ARG.findall(dockerfile.read_text()))
    where = tools.relative(dockerfile)
    if not args.get("PYTHON_IMAGE", "").startswith(f"python:{table.python}-"):
        yield where, f"PYTHON_IMAGE {args.get('PYTHON_IMAGE')} is not Python {table.python}"
    if args.get("TORCH_VERSION") != table.torch:
        yield where, f"TORCH_VERSION {args.get('TORCH_VERSION')}, the table pins {table.torch}"
    index = TORCH_INDEX.format(table.cuda.replace(".", ""))
    if args.get("TORCH_INDEX_URL") != index:
        yield where, f"TORCH_INDEX_URL {args.get('TORCH_INDEX_URL')}, CUDA {table.cuda} is {index}"
    published = table.torch_cuda_builds.get(_minor(table.torch), ())
    if table.cuda not in published:
        yield (
            "infra/versions.py",
            f"PyTorch publishes torch {_minor(table.torch)} for CUDA "
            f"{', '.join(published) or 'nothing the table knows'}, not {table.cuda}",
        )
    yield from _driver_problems(table)
    yield from _python_problems(table.python, root)
    makefile = root / "Makefile"
    text = makefile.read_text()
    spec = _TORCH_SPEC.search(text)
    if spec is None or spec.group(1) != table.torch:
        shown = spec.group(1) if spec else "missing"
        yield tools.relative(makefile), f"TORCH_SPEC torch=={shown}, the image has {table.torch}"
    cpu_index = _TORCH_CPU_INDEX.search(text)
    if cpu_index is None or cpu_index.group(1) != CPU_TORCH_INDEX or _SETUP_TORCH not in text:
        shown = cpu_index.group(1) if cpu_index else "missing"
        yield (
            tools.relative(makefile),
            (
                f"TORCH_INDEX {shown}: `make setup` must install TORCH_SPEC with --extra-index-url "
                f"{CPU_TORCH_INDEX}, or a fresh Linux machine gets PyPI's CUDA build of torch"
            ),
        )


def _driver_problems(table: ImageTable) -> Iterator[tuple[str, str]]:
    driver = table.ami_driver.get(table.kubernetes_version)
    needed = table.cuda_minimum_driver.get(table.cuda)
    subject = f"{versions.GPU_AMI_TYPE} at Kubernetes {table.kubernetes_version}"
    if driver is None:
        yield subject, "no NVIDIA driver in GPU_AMI_NVIDIA_DRIVER (read the AMI release notes)"
    elif needed is None:
        yield subject, f"no minimum driver known for CUDA {table.cuda} (CUDA_MINIMUM_DRIVER)"
    elif _numbers(driver) < _numbers(needed):
        yield (
            subject,
            f"NVIDIA driver {driver} is older than the {needed} that CUDA {table.cuda} (the "
            f"image's torch) needs: pods would fail to initialise CUDA on every GPU node",
        )


def _python_problems(python: str, root: Path) -> Iterator[tuple[str, str]]:
    for workflow in sorted((root / ".github" / "workflows").glob("*.y*ml")):
        jobs = (yaml.safe_load(workflow.read_text()) or {}).get("jobs") or {}
        for job_name, job in jobs.items():
            for step in (job or {}).get("steps") or []:
                if not str(step.get("uses", "")).startswith("actions/setup-python@"):
                    continue
                found = str((step.get("with") or {}).get("python-version"))
                if found != python:
                    subject = f"{tools.relative(workflow)} job {job_name}"
                    yield subject, f"setup-python {found}, the image runs Python {python}"
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    mypy = str(pyproject.get("tool", {}).get("mypy", {}).get("python_version"))
    if mypy != python:
        yield "pyproject.toml [tool.mypy]", f"python_version {mypy}, the image runs {python}"
    for pattern in PYTHON_IMAGE_TEXTS:
        for path in sorted(root.glob(pattern)):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if line.startswith("ARG PYTHON_IMAGE="):
                    continue  # checked above, against the table
                for found in _PYTHON_IMAGE_MENTION.findall(line):
                    if found != python:
                        yield (
                            f"{tools.relative(path)}:{number}",
                            f"names python:{found}, the image runs Python {python}",
                        )


def check_image(
    result: CheckResult, table: ImageTable | None = None, root: Path = tools.REPO_ROOT
) -> None:
    table = table or ImageTable()
    result.inspected += 1
    for subject, problem in image_problems(table, root):
        result.fail(subject, problem)
    result.note(
        f"image: Python {table.python}, torch {table.torch}+cu{table.cuda.replace('.', '')} "
        f"(CUDA {table.cuda} needs driver >= {table.cuda_minimum_driver.get(table.cuda)}); "
        f"{versions.GPU_AMI_TYPE} {table.kubernetes_version} ships "
        f"{table.ami_driver.get(table.kubernetes_version)}"
    )


def check_versions() -> CheckResult:
    result = CheckResult("version table: vendored charts, Kubernetes minor, image inputs, driver")
    check_charts(result)
    check_image(result)
    return result
