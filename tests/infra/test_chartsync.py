"""`make charts` against a real chart repository on loopback (Helm's own client through
helm-python-sdk, an index.yaml made by `helm repo index`): the vendored archive is compared with the
published one, fetched when missing, and checked offline when the repository cannot be reached."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import helm_python as helm
import pytest
from helm_python import registry

from infra import versions
from rehearsal import chartsync


@dataclasses.dataclass(frozen=True)
class Repository:
    url: str
    folder: Path
    published: Path
    pin: versions.HelmChart


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[Repository]:
    folder = tmp_path / "repository"
    folder.mkdir()
    chart = helm.Chart.create("scaffold", tmp_path)
    chart.save(folder)
    published = folder / f"scaffold-{chart.metadata['version']}.tgz"
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    registry.repo_index_generate(folder, base_url=url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pin = versions.HelmChart(
        repository=url,
        chart="scaffold",
        version=str(chart.metadata["version"]),
        app_version=str(chart.metadata["appVersion"]),
        sha256=_sha256(published),
        source="helm create",
    )
    try:
        yield Repository(url, folder, published, pin)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def repackaged(source: Path, target: Path, edit: dict[str, bytes] | None = None) -> Path:
    """The same chart packaged again (other timestamps: other archive bytes), files optionally
    replaced."""
    out = io.BytesIO()
    with tarfile.open(source) as old, tarfile.open(fileobj=out, mode="w") as new:
        for member in old.getmembers():
            handle = old.extractfile(member)
            data = handle.read() if handle else b""
            data = (edit or {}).get(member.name, data)
            member.size, member.mtime = len(data), 1_000_000
            new.addfile(member, io.BytesIO(data))
    target.write_bytes(gzip.compress(out.getvalue(), mtime=0))
    return target


def run(repo: Repository, vendored: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`make charts` with the table pinning the vendored file's bytes."""
    pin = dataclasses.replace(repo.pin, sha256=_sha256(vendored))
    code = chartsync.main([], pins=[pin], directory=vendored.parent)
    return code, capsys.readouterr().out


def vendored_path(tmp_path: Path, repo: Repository) -> Path:
    folder = tmp_path / "charts"
    folder.mkdir(exist_ok=True)
    return folder / repo.published.name


@pytest.mark.parametrize(
    ("repack", "verdict"),
    [
        (False, "identical to the published archive"),
        (True, "same files and bytes as the published archive"),  # other tar/gzip timestamps
    ],
)
def test_the_published_archive_or_the_same_files_repackaged_pass(
    repository: Repository,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    repack: bool,
    verdict: str,
) -> None:
    vendored = vendored_path(tmp_path, repository)
    if repack:
        repackaged(repository.published, vendored)
        assert _sha256(vendored) != _sha256(repository.published)
    else:
        vendored.write_bytes(repository.published.read_bytes())
    code, out = run(repository, vendored, capsys)
    assert code == 0, out
    assert verdict in out


def test_an_archive_whose_content_differs_from_upstream_fails_naming_the_file(
    repository: Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit = {"scaffold/values.yaml": b"replicaCount: 9\n"}
    vendored = repackaged(repository.published, vendored_path(tmp_path, repository), edit)
    code, out = run(repository, vendored, capsys)
    assert code == 1
    assert "differs from the published archive: scaffold/values.yaml" in out


def test_a_missing_archive_is_fetched_and_its_sha256_printed_for_the_table(
    repository: Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vendored = vendored_path(tmp_path, repository)
    stale = dataclasses.replace(repository.pin, sha256="0" * 64)
    code = chartsync.main([], pins=[stale], directory=vendored.parent)
    out = capsys.readouterr().out
    assert vendored.read_bytes() == repository.published.read_bytes()
    assert f"sha256 {repository.pin.sha256} (put it in infra/versions.py" in out
    assert code == 1, "the table does not pin these bytes yet"
    assert chartsync.main([], pins=[repository.pin], directory=vendored.parent) == 0


def test_unreachable_upstream_verifies_the_vendored_archive_only(
    repository: Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vendored = vendored_path(tmp_path, repository)
    vendored.write_bytes(repository.published.read_bytes())
    closed = dataclasses.replace(repository.pin, repository="http://127.0.0.1:1")
    assert chartsync.main([], pins=[closed], directory=vendored.parent) == 0
    assert "upstream not reachable, the vendored archive verified only" in capsys.readouterr().out


def test_offline_a_wrong_app_version_or_sha256_fails(
    repository: Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vendored = vendored_path(tmp_path, repository)
    vendored.write_bytes(repository.published.read_bytes())
    wrong = dataclasses.replace(repository.pin, app_version="9.9.9", sha256="f" * 64)
    assert chartsync.main(["--offline"], pins=[wrong], directory=vendored.parent) == 1
    out = capsys.readouterr().out
    assert "Chart.yaml appVersion is '1.16.0', infra/versions.py pins '9.9.9'" in out
    assert f"sha256 {repository.pin.sha256}, infra/versions.py pins {'f' * 64}" in out


def test_the_vendored_charts_pass_offline(capsys: pytest.CaptureFixture[str]) -> None:
    assert chartsync.main(["--offline"]) == 0
    assert f"all {len(versions.HELM_CHARTS)} charts verified" in capsys.readouterr().out
