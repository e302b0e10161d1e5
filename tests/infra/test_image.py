"""The image component: ECR repository, the build (or a prebuilt image), the context digest."""

from __future__ import annotations

import dataclasses
import json
import os
import re
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
        args = dataclasses.replace(image_args(revision), prebuilt_image=prebuilt)
        component = image.InferenceImage("img", args)
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


def image_args(revision: str | None = "a" * 40, context: Path = ROOT) -> image.ImageArgs:
    return image.ImageArgs(
        repository_name="gpu-inference-dev",
        model_id="thenlper/gte-large-zh",
        model_revision=revision,
        prebuilt_image=None,
        context=context,
    )


def test_tag_is_the_model_and_the_content_digest() -> None:
    built = build(None)
    dockerfile = ROOT / "Dockerfile"
    digest = image.context_digest(ROOT, dockerfile, image.build_recipe(image_args()))
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


# --- The tag changes whenever pulumi-docker-build would build again -------------------------------
#
# The provider builds again when its Diff finds a changed input or a changed context hash
# (pulumi-docker-build v0.0.22 provider/internal/image.go Diff; context.go hashBuildContext: per
# file of the filtered context, its content, relative path and mode string). A build under a tag the
# repository already holds fails: the repository's tags are IMMUTABLE. So every change the provider
# sees must change the tag.


def context(tmp_path: Path) -> Path:
    write(tmp_path / ".dockerignore", "*\n!app/\n")
    write(tmp_path / "Dockerfile", "FROM scratch\nCOPY app /app\n")
    write(tmp_path / "app" / "main.py", "print(1)\n")
    write(tmp_path / "app" / "config.txt", "a\n")
    write(tmp_path / "other.txt", "b\n")
    (tmp_path / "app" / "main.py").chmod(0o644)
    (tmp_path / "app" / "current").symlink_to("config.txt")
    return tmp_path


def tag_of(root: Path) -> str:
    args = image_args(context=root)
    return image.image_tag(
        args.model_id, image.context_digest(root, root / "Dockerfile", image.build_recipe(args))
    )


def retarget(link: Path, target: str) -> None:
    link.unlink()
    link.symlink_to(target)


SEEN_BY_THE_BUILD = {
    # A checkout under umask 002 instead of 022, or a `chmod +x`: same bytes, another mode.
    "group-writable": lambda root: (root / "app" / "main.py").chmod(0o664),
    "executable": lambda root: (root / "app" / "main.py").chmod(0o755),
    "content": lambda root: write(root / "app" / "main.py", "print(2)\n"),
    "renamed": lambda root: (root / "app" / "main.py").rename(root / "app" / "entry.py"),
    "new file": lambda root: write(root / "app" / "extra.py", ""),
    "symlink target": lambda root: retarget(root / "app" / "current", "main.py"),
    "dockerfile": lambda root: write(root / "Dockerfile", "FROM scratch\n"),
    # Docker's ignore file for one Dockerfile takes precedence over the context's.
    "Dockerfile.dockerignore": lambda root: write(
        root / "Dockerfile.dockerignore", "*\n!other.txt\n"
    ),
}
UNSEEN_BY_THE_BUILD = {
    "directory mode": lambda root: (root / "app").chmod(0o775),
    "modification time": lambda root: os.utime(root / "app" / "main.py", (0, 0)),
    "ignored file": lambda root: write(root / "other.txt", "changed\n"),
}


@pytest.mark.parametrize("change", list(SEEN_BY_THE_BUILD))
def test_every_change_the_build_detects_changes_the_tag(tmp_path: Path, change: str) -> None:
    root = context(tmp_path)
    before = tag_of(root)
    SEEN_BY_THE_BUILD[change](root)
    assert tag_of(root) != before, f"{change}: the provider builds again, into the same tag"


@pytest.mark.parametrize("change", list(UNSEEN_BY_THE_BUILD))
def test_what_the_build_ignores_keeps_the_tag(tmp_path: Path, change: str) -> None:
    root = context(tmp_path)
    before = tag_of(root)
    UNSEEN_BY_THE_BUILD[change](root)
    assert tag_of(root) == before, f"{change}: a new tag (and image) for an unchanged build"


def test_every_input_the_image_diff_compares_is_in_the_tag(built: Inventory) -> None:
    inputs = built.one(DOCKER_IMAGE).inputs
    recipe = image.build_recipe(image_args())
    # The tags are derived from the recipe; Diff ignores registry passwords, and the registry
    # address and cache refs are the repositories' (named in the recipe's "cache").
    derived = {"tags", "registries", "cacheFrom"}
    assert set(inputs) - derived <= set(recipe), "an Image input the tag does not follow"
    assert inputs["buildArgs"] == recipe["buildArgs"]
    assert inputs["buildOnPreview"] is recipe["buildOnPreview"]
    assert inputs["platforms"] == recipe["platforms"]
    assert inputs["push"] is recipe["push"]
    assert inputs["network"] == recipe["network"]
    assert inputs["context"] == {"location": recipe["context"]}
    assert inputs["dockerfile"] == {"location": recipe["dockerfile"]}
    cache_to = dict(inputs["cacheTo"][0]["registry"])
    assert cache_to.pop("ref") is not None
    camel = {
        re.sub(r"_(.)", lambda m: m.group(1).upper(), k): v for k, v in recipe["cacheTo"].items()
    }
    assert cache_to == camel
