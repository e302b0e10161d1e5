"""The image component: ECR repository, the build (or a prebuilt image), the context digest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import image
from rehearsal.mockengine import ROOT, Inventory, run_function

PREBUILT = "123456789012.dkr.ecr.us-west-2.amazonaws.com/embeddings@sha256:" + "cd" * 32
REPOSITORY = "aws:ecr/repository:Repository"
DOCKER_IMAGE = "docker-build:index:Image"


@dataclass
class Built:
    inventory: Inventory
    tag: str | None = None
    refs: list[Any] = field(default_factory=list)
    """What image_ref resolved to (nothing when unknown)."""


def build(prebuilt: str | None, revision: str | None = "a" * 40) -> Built:
    built = Built(Inventory((), {}))

    def program() -> None:
        component = image.InferenceImage(
            "img",
            image.ImageArgs(
                repository_name="gpu-inference-dev",
                model_id="thenlper/gte-large-zh",
                model_revision=revision,
                prebuilt_image=prebuilt,
                context=ROOT,
            ),
        )
        built.tag = component.tag
        component.image_ref.apply(built.refs.append)

    built.inventory = run_function(program)
    return built


@pytest.fixture(scope="module")
def built() -> Inventory:
    return build(None).inventory


def test_repository_is_immutable_scanned_and_encrypted(built: Inventory) -> None:
    repo = built.one(REPOSITORY, "img-repository").inputs
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["encryptionConfigurations"] == [{"encryptionType": "KMS"}]


def test_lifecycle_policy_expires_untagged_and_old_images(built: Inventory) -> None:
    policy = json.loads(
        built.one("aws:ecr/lifecyclePolicy:LifecyclePolicy", "img-lifecycle").inputs["policy"]
    )
    rules = sorted(policy["rules"], key=lambda rule: rule["rulePriority"])
    assert rules[0]["selection"]["tagStatus"] == "untagged"
    # ECR requires the `any` rule to come last.
    assert rules[-1]["selection"] == {
        "tagStatus": "any",
        "countType": "imageCountMoreThan",
        "countNumber": image.KEEP_IMAGES,
    }


def test_image_is_built_for_amd64_with_the_model_as_build_args(built: Inventory) -> None:
    docker = built.one(DOCKER_IMAGE).inputs
    assert docker["platforms"] == ["linux/amd64"]
    assert docker["buildArgs"] == {"MODEL_ID": "thenlper/gte-large-zh", "MODEL_REVISION": "a" * 40}
    assert docker["push"] is True
    cwd = Path.cwd()
    assert (cwd / docker["dockerfile"]["location"]).resolve() == ROOT / "Dockerfile"
    assert (cwd / docker["context"]["location"]).resolve() == ROOT
    assert len(docker["tags"]) == 1


def test_image_builds_on_up_only(built: Inventory) -> None:
    # A preview must not build (and a CI preview runner must not pull torch and the model).
    assert built.one(DOCKER_IMAGE).inputs["buildOnPreview"] is False


def test_every_stage_is_cached_in_its_own_mutable_repository(built: Inventory) -> None:
    docker = built.one(DOCKER_IMAGE).inputs
    cache_repo = built.one(REPOSITORY, "img-cache-repository").inputs
    assert cache_repo["name"] == "gpu-inference-dev-buildcache"
    # The cache tag is rewritten by each build; the image repository's tags are immutable.
    assert cache_repo["imageTagMutability"] == "MUTABLE"
    assert cache_repo["forceDelete"] is True
    registry_host = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
    ref = f"{registry_host}/gpu-inference-dev-buildcache:{image.CACHE_TAG}"
    assert docker["cacheFrom"] == [{"registry": {"ref": ref}}]
    (cache_to,) = docker["cacheTo"]
    registry = cache_to["registry"]
    assert registry["ref"] == ref
    assert registry["mode"] == "max"
    # ECR stores a cache only as an OCI image manifest.
    assert (registry["imageManifest"], registry["ociMediaTypes"]) == (True, True)
    policy = json.loads(
        built.one("aws:ecr/lifecyclePolicy:LifecyclePolicy", "img-cache-lifecycle").inputs["policy"]
    )
    (rule,) = policy["rules"]
    assert rule["selection"]["tagStatus"] == "untagged"


def test_tag_is_the_model_and_the_content_digest() -> None:
    built = build(None)
    dockerfile = ROOT / "Dockerfile"
    digest = image.context_digest(
        ROOT, dockerfile, {"MODEL_ID": "thenlper/gte-large-zh", "MODEL_REVISION": "a" * 40}
    )
    assert built.tag == f"thenlper-gte-large-zh-{digest[:12]}"
    (tag,) = built.inventory.one(DOCKER_IMAGE).inputs["tags"]
    assert tag.endswith(f":{built.tag}")
    (ref,) = built.refs
    assert ref.startswith(tag.rsplit(":", 1)[0] + "@sha256:"), ref


def test_unpinned_revision_leaves_the_dockerfile_default() -> None:
    inventory = build(None, revision=None).inventory
    assert inventory.one(DOCKER_IMAGE).inputs["buildArgs"] == {"MODEL_ID": "thenlper/gte-large-zh"}


def test_prebuilt_image_skips_the_build_and_is_used_as_is() -> None:
    built = build(PREBUILT)
    inventory = built.inventory
    assert inventory.of_type(DOCKER_IMAGE) == []
    assert (built.tag, built.refs) == (None, [PREBUILT])
    # No build, no cache.
    assert inventory.one(REPOSITORY).inputs["imageTagMutability"] == "IMMUTABLE"


def test_context_is_what_dockerignore_lets_through() -> None:
    files = list(image.context_files(ROOT))
    assert "pyproject.toml" in files
    assert "service/contract.py" in files
    assert not any(f.startswith(("infra/", "tests/", ".venv/", ".git/")) for f in files)
    assert not any("__pycache__" in f for f in files)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_tag_follows_content_and_build_args(tmp_path: Path) -> None:
    write(tmp_path / ".dockerignore", "*\n!app/\napp/**/*.pyc\n")
    write(tmp_path / "Dockerfile", "FROM scratch\n")
    write(tmp_path / "app" / "main.py", "print(1)\n")
    write(tmp_path / "notes.txt", "not in the context\n")
    dockerfile = tmp_path / "Dockerfile"
    first = image.context_digest(tmp_path, dockerfile, {"MODEL_ID": "m"})
    assert image.context_digest(tmp_path, dockerfile, {"MODEL_ID": "m"}) == first
    write(tmp_path / "notes.txt", "changed, still ignored\n")
    write(tmp_path / "app" / "cache" / "x.pyc", "ignored by pattern\n")
    assert image.context_digest(tmp_path, dockerfile, {"MODEL_ID": "m"}) == first
    assert image.context_digest(tmp_path, dockerfile, {"MODEL_ID": "other"}) != first
    write(tmp_path / "app" / "main.py", "print(2)\n")
    assert image.context_digest(tmp_path, dockerfile, {"MODEL_ID": "m"}) != first


def test_tag_is_a_valid_docker_tag() -> None:
    tag = image.image_tag("Org/Some_Model.v2", "0123456789abcdef")
    assert tag == "org-some_model.v2-0123456789ab"
    assert len(image.image_tag("x" * 300, "f" * 64)) <= 128


def test_deploy_jobs_build_with_a_builder_that_can_export_the_cache() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    ups = 0
    for name, job in workflow["jobs"].items():
        steps = job.get("steps", [])
        uses = [str(step.get("uses", "")) for step in steps]
        up = [
            i
            for i, step in enumerate(steps)
            if uses[i].startswith("pulumi/actions@") and step["with"]["command"] == "up"
        ]
        if not up:
            continue
        ups += 1
        buildx = [i for i, u in enumerate(uses) if u.startswith("docker/setup-buildx-action@")]
        assert buildx, f"{name}: no buildx builder"
        assert buildx[0] < up[0], f"{name}: the buildx builder is set up after pulumi up"
        driver = (steps[buildx[0]].get("with") or {}).get("driver", "docker-container")
        assert driver == "docker-container", f"{name}: the {driver} driver cannot export a cache"
    assert ups >= 2, "dev and prod are deployed by pulumi up"
