"""yamllint on edited YAML, and actionlint + SHA pinning on the GitHub workflows."""

from __future__ import annotations

from pathlib import Path

from checks.workflows import WORKFLOWS_DIR, check_workflows
from checks.yaml_lint import check_yamllint, default_targets


def test_targets_cover_stack_files_and_workflows() -> None:
    names = {p.name for p in default_targets()}
    assert {"Pulumi.dev.yaml", "Pulumi.prod.yaml", "ci.yml", "deploy.yml"} <= names


def test_broken_yaml_fails_with_line_and_rule(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text("config:\n  aws:region: us-west-2   \n  aws:region: us-east-1\n")
    result = check_yamllint([path])
    messages = [str(f) for f in result.findings]
    assert any(":2:" in m and "(trailing-spaces)" in m for m in messages), messages
    assert any(":3:" in m and "(key-duplicates)" in m for m in messages), messages


def test_clean_yaml_passes(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text("config:\n  aws:region: us-west-2\n")
    assert check_yamllint([path]).passed


def test_repository_workflows_pass(actionlint: Path) -> None:
    result = check_workflows()
    assert result.passed, result.render()
    assert result.inspected == len(list(WORKFLOWS_DIR.glob("*.yml")))


def test_broken_workflow_fails_with_actionlint_message(actionlint: Path, tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text(
        "on: pull_request\n"
        "permissions: {}\n"
        "jobs:\n"
        "  deploy:\n"
        "    needs: [tset]\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - uses: actions/checkout@v5\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
    )
    result = check_workflows(workflows)
    messages = "\n".join(str(f) for f in result.findings)
    assert 'job "deploy" needs job "tset" which does not exist' in messages
    assert "actions/checkout@v5 is not pinned to a commit SHA" in messages
    assert '"github.event.pull_request.title" is potentially untrusted' in messages
