"""hadolint (no finding at any level) and the base-image digest check on Dockerfiles."""

from __future__ import annotations

from pathlib import Path

from checks.dockerfile_lint import check_hadolint, unpinned_base_images

DIGEST = "sha256:" + "0" * 64
CLEAN = f"""\
ARG BASE=python:3.11-slim@{DIGEST}
FROM ${{BASE}} AS build
RUN python -m venv /opt/venv
FROM ${{BASE}}
COPY --from=build /opt/venv /opt/venv
USER 10001
HEALTHCHECK CMD ["python", "-c", "print(1)"]
CMD ["python", "-m", "service"]
"""


def _dockerfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return path


def test_clean_dockerfile_passes(hadolint: Path, tmp_path: Path) -> None:
    result = check_hadolint(_dockerfile(tmp_path, CLEAN), config=tmp_path / "none.yaml")
    assert result.passed, result.render()


def test_unpinned_apt_install_fails_with_line_rule_and_explanation(
    hadolint: Path, tmp_path: Path
) -> None:
    broken = CLEAN.replace(
        "RUN python -m venv /opt/venv",
        "RUN apt-get update && apt-get install -y --no-install-recommends curl "
        "&& rm -rf /var/lib/apt/lists/*",
    )
    result = check_hadolint(_dockerfile(tmp_path, broken), config=tmp_path / "none.yaml")
    assert not result.passed
    finding = result.findings[0]
    assert finding.subject.endswith("Dockerfile:3")
    assert finding.message.startswith("DL3008 warning: Pin versions in apt get install")
    assert "hadolint/wiki/DL3008" in finding.message


def test_missing_dockerfile_fails(tmp_path: Path) -> None:
    result = check_hadolint(tmp_path / "Dockerfile")
    assert "missing" in str(result.findings[0])


def test_base_images_must_resolve_to_a_digest() -> None:
    assert unpinned_base_images(CLEAN) == []
    unpinned = CLEAN.replace(f"@{DIGEST}", "")
    assert unpinned_base_images(unpinned) == [
        (2, "base image ${BASE} (= python:3.11-slim) is not pinned by @sha256 digest"),
        (4, "base image ${BASE} (= python:3.11-slim) is not pinned by @sha256 digest"),
    ]
    multi_line = "FROM --platform=linux/amd64 \\\n    debian:12 AS base\nFROM base\n"
    assert unpinned_base_images(multi_line) == [
        (1, "base image debian:12 (= debian:12) is not pinned by @sha256 digest")
    ]


def test_unpinned_base_image_fails_the_dockerfile_check(hadolint: Path, tmp_path: Path) -> None:
    result = check_hadolint(
        _dockerfile(tmp_path, CLEAN.replace(f"@{DIGEST}", "")), config=tmp_path / "none.yaml"
    )
    assert any("not pinned by @sha256 digest" in f.message for f in result.findings)
