"""`make charts`: the vendored chart archives checked against the table and, when the chart
repositories answer, against what upstream publishes.

For every chart pinned in infra/versions.py:

- the archive `charts/<chart>-<version>.tgz` exists (a missing one, after a bump, is fetched from
  the chart's repository into `charts/` and its sha256 printed for the table);
- its sha256, and its Chart.yaml name, version and appVersion, are the table's;
- upstream (the repository's index.yaml): the published archive of that version is the same file
  (the index digest is our sha256) or, for archives packaged from the upstream tag (tar and gzip
  timestamps differ), holds the same files with the same bytes. Anything else fails, naming the
  files that differ.

Offline (a repository that cannot be reached) only the local checks run, and a line says so.
Exit status 0 when every check that could run passed.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import helm_python as helm
from helm_python import registry

from infra import versions
from infra.charts import CHARTS_DIR, sha256


@dataclass
class Outcome:
    pin: versions.HelmChart
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_local(pin: versions.HelmChart, archive: Path) -> list[str]:
    """What is wrong with the vendored archive of a pin (empty: nothing)."""
    found = sha256(archive)
    problems = []
    if found != pin.sha256:
        problems.append(f"sha256 {found}, infra/versions.py pins {pin.sha256}")
    meta = helm.Chart.load(archive).metadata
    pinned = {"name": pin.chart, "version": pin.version, "appVersion": pin.app_version}
    for key, expected in pinned.items():
        if str(meta.get(key)) != expected:
            problems.append(
                f"Chart.yaml {key} is {meta.get(key)!r}, infra/versions.py pins {expected!r}"
            )
    return problems


def archive_files(archive: Path) -> dict[str, bytes]:
    """Every regular file of a chart archive by its path inside it."""
    files = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                files[member.name] = handle.read()
    return files


def content_differences(ours: Path, theirs: Path) -> list[str]:
    a, b = archive_files(ours), archive_files(theirs)
    only_ours = sorted(a.keys() - b.keys())
    only_theirs = sorted(b.keys() - a.keys())
    changed = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    return (
        [f"only in the vendored archive: {p}" for p in only_ours]
        + [f"only in the published archive: {p}" for p in only_theirs]
        + [f"differs from the published archive: {p}" for p in changed]
    )


def published_digest(pin: versions.HelmChart) -> str | None:
    """The index.yaml digest of the pinned version (None: the index does not list it)."""
    index = registry.repo_index(pin.repository)
    for entry in index.get("entries", {}).get(pin.chart, []):
        if str(entry.get("version")) == pin.version:
            return str(entry.get("digest") or "")
    return None


def pull(pin: versions.HelmChart, destination: Path) -> Path:
    registry.pull(pin.chart, repo_url=pin.repository, version=pin.version, destination=destination)
    return destination / pin.archive_name


def compare_upstream(pin: versions.HelmChart, archive: Path, outcome: Outcome) -> None:
    digest = published_digest(pin)
    if digest is None:
        outcome.problems.append(f"{pin.repository} publishes no {pin.chart} {pin.version}")
        return
    if digest == pin.sha256:
        outcome.lines.append(f"identical to the published archive ({pin.repository})")
        return
    with tempfile.TemporaryDirectory() as scratch:
        published = pull(pin, Path(scratch))
        differences = content_differences(archive, published)
    if differences:
        outcome.problems += differences
    else:
        outcome.lines.append(
            f"same files and bytes as the published archive (index digest {digest[:16]}..., "
            "packaged from the upstream tag)"
        )


def sync(pin: versions.HelmChart, directory: Path, offline: bool) -> Outcome:
    outcome = Outcome(pin)
    archive = directory / pin.archive_name
    if not archive.is_file():
        if offline:
            outcome.problems.append(f"no archive {archive} (offline: cannot fetch it)")
            return outcome
        try:
            pull(pin, directory)
        except helm.HelmError as error:
            outcome.problems.append(f"no archive {archive}, and fetching it failed: {error}")
            return outcome
        outcome.lines.append(
            f"fetched {archive} from {pin.repository}: sha256 {sha256(archive)} "
            "(put it in infra/versions.py, then commit the archive)"
        )
    outcome.problems += check_local(pin, archive)
    if offline:
        return outcome
    try:
        compare_upstream(pin, archive, outcome)
    except helm.HelmError as error:
        outcome.lines.append(
            f"upstream not reachable, the vendored archive verified only ({error})"
        )
    return outcome


def main(
    argv: Sequence[str] | None = None,
    pins: Sequence[versions.HelmChart] = versions.HELM_CHARTS,
    directory: Path = CHARTS_DIR,
) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.chartsync", description=__doc__)
    parser.add_argument("--offline", action="store_true", help="check the vendored archives only")
    args = parser.parse_args(argv)
    failed = 0
    for pin in pins:
        outcome = sync(pin, directory, args.offline)
        status = "FAIL" if outcome.problems else "ok  "
        print(f"{status} {pin.chart} {pin.version} ({directory.name}/{pin.archive_name})")
        for line in outcome.lines:
            print(f"     {line}")
        for problem in outcome.problems:
            print(f"     - {problem}")
        failed += bool(outcome.problems)
    if failed:
        print(f"make charts: {failed} of {len(pins)} charts FAILED")
        return 1
    print(f"make charts: all {len(pins)} charts verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
