"""hadolint on the Dockerfile: no finding at any level (error, warning, info or style).

The configuration in .hadolint.yaml applies (the same one a developer's editor uses); the gate reads
hadolint's JSON so that each finding names its line, rule and the rule's own explanation.
"""

from __future__ import annotations

import re
from pathlib import Path

from checks import tools
from checks.report import CheckResult

DOCKERFILE = tools.REPO_ROOT / "Dockerfile"
CONFIG = tools.REPO_ROOT / ".hadolint.yaml"
_WIKI = "https://github.com/hadolint/hadolint/wiki/"
_ARG_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def check_hadolint(dockerfile: Path = DOCKERFILE, config: Path = CONFIG) -> CheckResult:
    result = CheckResult(f"hadolint + base image digests, {tools.relative(dockerfile)}")
    if not dockerfile.is_file():
        result.fail(
            tools.relative(dockerfile), "missing: the service image is built from it (issue #2)"
        )
        return result
    hadolint = tools.HADOLINT.locate()
    if hadolint is None:
        result.fail("hadolint", tools.HADOLINT.missing_message())
        return result
    args: list[str | Path] = [hadolint, "--no-color", "--format", "json"]
    if config.is_file():
        args += ["--config", config]
    findings, run = tools.run_json([*args, dockerfile])
    if findings is None:
        result.fail(tools.relative(dockerfile), f"hadolint failed: {tools.output_of(run)}")
        return result
    result.inspected = 1
    for finding in findings:
        code = finding.get("code", "")
        link = f" ({_WIKI}{code})" if code.startswith("DL") else ""
        result.fail(
            f"{tools.relative(dockerfile)}:{finding.get('line')}",
            f"{code} {finding.get('level')}: {finding.get('message')}{link}",
        )
    if run.returncode != 0 and not findings:
        result.fail(
            tools.relative(dockerfile), f"hadolint exited {run.returncode}: {run.stderr.strip()}"
        )
    for line, message in unpinned_base_images(dockerfile.read_text()):
        result.fail(f"{tools.relative(dockerfile)}:{line}", message)
    return result


def _instructions(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction) with line continuations joined and comments dropped."""
    joined: list[tuple[int, str]] = []
    current, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if not current:
            start = number
        current += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            joined.append((start, current.strip()))
            current = ""
    return joined


def unpinned_base_images(text: str) -> list[tuple[int, str]]:
    """Every FROM whose image, after expanding build-arg defaults, is not pinned by sha256 digest.

    hadolint and checkov read `FROM ${ARG}` literally; this resolves the arg the way `docker build`
    does without --build-arg, so a digest pin kept in an ARG default is verified, not assumed.
    """
    args: dict[str, str] = {}
    stages: set[str] = set()
    problems = []
    for line, instruction in _instructions(text):
        keyword, _, rest = instruction.partition(" ")
        if keyword.upper() == "ARG" and "=" in rest:
            name, _, default = rest.strip().partition("=")
            args[name] = default.strip().strip('"')
        elif keyword.upper() == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = _ARG_REFERENCE.sub(lambda m: args.get(m[1] or m[2], ""), words[0])
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2].lower())
            if image.lower() in stages or image == "scratch":
                continue
            if "@sha256:" not in image:
                problems.append(
                    (
                        line,
                        f"base image {words[0]} (= {image or 'empty'}) is not pinned by @sha256 "
                        "digest",
                    )
                )
    return problems
