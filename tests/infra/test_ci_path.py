"""The workflows, the config schema (Pulumi.yaml), the stack files and README "CI/CD" agree on the
path CI takes to a running stack: which roles it assumes (and the access entries they get), which
runner reaches the Kubernetes API, and which settings a person must create."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from rehearsal.mockengine import ROOT, load_stack_config

WORKFLOWS = ROOT / ".github" / "workflows"
PULUMI_ACTION = "pulumi/actions@"
AWS_ACTION = "aws-actions/configure-aws-credentials@"
BUILTIN_SECRETS = {"GITHUB_TOKEN"}


def workflow(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return loaded


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"### {title}")
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else len(text)]


CI_CD = readme_section("CI/CD (GitHub Actions)")


def schema_keys() -> set[str]:
    return set(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])


def settings_read(text: str) -> set[str]:
    """`vars.X` and `secrets.X` the workflow text reads, with `vars[matrix.k]` resolved."""
    names = set(re.findall(r"\b(?:vars|secrets)\.([A-Z][A-Z0-9_]*)", text))
    return names - BUILTIN_SECRETS


def matrix_settings(job: dict[str, Any]) -> set[str]:
    """Variable names a job reads indirectly, as `vars[matrix.<key>]`."""
    text = yaml.safe_dump(job)
    keys = set(re.findall(r"vars\[matrix\.([a-z]+)\]", text))
    rows = job.get("strategy", {}).get("matrix", {}).get("include", [])
    return {row[k] for row in rows for k in keys}


def all_jobs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job_id, job in workflow(path.name)["jobs"].items():
            yield path.name, job_id, job


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith(action)]


def cluster_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    """Jobs that run Pulumi against a stack, i.e. talk to its Kubernetes API."""
    return [(f, j, job) for f, j, job in all_jobs() if steps_using(job, PULUMI_ACTION)]


def job_stacks(job: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(stack, region, preview role variable or None) for each stack a cluster job handles."""
    rows = job.get("strategy", {}).get("matrix", {}).get("include")
    if rows:
        return [(row["stack"], row["region"], row["role"]) for row in rows]
    (pulumi,) = steps_using(job, PULUMI_ACTION)
    (aws,) = steps_using(job, AWS_ACTION)
    stack = pulumi["with"]["stack-name"].rsplit("/", 1)[-1]
    return [(stack, aws["with"]["aws-region"], None)]


def test_every_setting_the_workflows_read_is_documented_and_nothing_else() -> None:
    read = set()
    for path in WORKFLOWS.glob("*.yml"):
        read |= settings_read(path.read_text())
    for _, _, job in all_jobs():
        read |= matrix_settings(job)
    documented = set(re.findall(r"`((?:AWS|PULUMI)_[A-Z0-9_]+)`", CI_CD))
    assert read - documented == set(), "read by a workflow, not in README CI/CD"
    assert documented - read == set(), "in README CI/CD, read by no workflow"


def test_every_config_key_in_the_ci_section_is_declared() -> None:
    named = set(re.findall(r"`([a-z][a-z0-9]*[A-Z][A-Za-z0-9]*)`", CI_CD))
    assert {"previewRoleArn", "deployRoleArn", "publicAccessCidrs"} <= named
    assert named <= schema_keys(), sorted(named - schema_keys())


@pytest.mark.parametrize(
    ("key", "setting"),
    [("previewRoleArn", "AWS_PREVIEW_ROLE_ARN_"), ("deployRoleArn", "AWS_DEPLOY_ROLE_ARN")],
)
def test_the_readme_maps_each_role_key_to_its_github_setting(key: str, setting: str) -> None:
    rows = [line for line in CI_CD.splitlines() if line.startswith(f"| `{key}`")]
    assert len(rows) == 1, f"one table row for {key}"
    assert setting in rows[0]


def test_jobs_that_reach_the_cluster_run_on_the_stacks_runner() -> None:
    """GitHub-hosted runners come from ranges no publicAccessCidrs admits: a cluster job's runner is
    the stack's `PULUMI_RUNNER_<STACK>` variable."""
    jobs = cluster_jobs()
    assert {j for _, j, _ in jobs} == {"preview", "up-dev", "up-prod"}
    for name, job_id, job in jobs:
        runs_on = str(job["runs-on"])
        assert "ubuntu" not in runs_on, f"{name} {job_id} runs on a GitHub-hosted runner"
        runners = settings_read(runs_on) | matrix_settings(job)
        for stack, _, _ in job_stacks(job):
            assert f"PULUMI_RUNNER_{stack.upper()}" in runners, f"{name} {job_id} ({stack})"


def test_each_stack_ci_handles_has_its_roles_region_and_network() -> None:
    seen = set()
    for name, job_id, job in cluster_jobs():
        (aws,) = steps_using(job, AWS_ACTION)
        for stack, region, preview_var in job_stacks(job):
            seen.add(stack)
            cfg = load_stack_config(stack)
            where = f"{name} {job_id} ({stack})"
            assert region == cfg.region, (
                f"{where}: region {region}, Pulumi.{stack}.yaml says {cfg.region}"
            )
            if preview_var is not None:
                assert preview_var == f"AWS_PREVIEW_ROLE_ARN_{stack.upper()}", where
                assert "matrix.role" in aws["with"]["role-to-assume"], where
                assert cfg.cluster.preview_role_arn, (
                    f"{where}: Pulumi.{stack}.yaml has no previewRoleArn"
                )
            else:
                assert "vars.AWS_DEPLOY_ROLE_ARN" in aws["with"]["role-to-assume"], where
                assert job.get("environment"), f"{where}: the deploy role is an environment's"
                assert cfg.cluster.deploy_role_arn, (
                    f"{where}: Pulumi.{stack}.yaml has no deployRoleArn"
                )
            public = cfg.cluster.endpoint_public_access and cfg.cluster.public_access_cidrs
            assert public or cfg.cluster.private_api_access_cidrs, (
                f"{where}: no network reaches the API"
            )
    assert seen == {"dev", "prod"}
