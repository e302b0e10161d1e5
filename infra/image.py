"""The model server image: an ECR repository with ./Dockerfile built and pushed, or a prebuilt one.

Pods reference the image by digest, so what runs is exactly what was scanned and reviewed; a tag can
never be moved under a running Deployment (tags are immutable in the repository as well).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

PLATFORM: Final = docker_build.Platform.LINUX_AMD64
"""GPU node groups are x86_64 (g4dn/g5/g6); an arm64 laptop cross-builds."""
KEEP_IMAGES: Final = 30
UNTAGGED_EXPIRY_DAYS: Final = 7
CACHE_TAG: Final = "buildcache"
"""The one tag of the layer cache repository, overwritten by every build."""
CACHE_EXPIRY_DAYS: Final = 1
"""Cache manifests replaced by a newer build are untagged; their layers go after a day."""
ALWAYS_IGNORED: Final = frozenset({".git", ".venv", "node_modules", "build"})
"""Never part of any build context here, and too large to walk on every `pulumi up`."""
BUILD_ON_PREVIEW: Final = False
"""Build on `pulumi up` only (pulumi-docker-build 0.0.22 ImageArgs.build_on_preview; the default,
true, builds on every preview). The preview still shows the new tag, which is the content digest,
and still validates the Dockerfile's syntax."""
CACHE_TO: Final[Mapping[str, Any]] = {
    # Every stage (mode max): the torch and model stages are the expensive ones, and they are not
    # in the final image's own layers. ECR accepts a cache only as an OCI image manifest
    # (aws.amazon.com/blogs/containers, "Announcing remote cache support in Amazon ECR for
    # BuildKit clients"; the provider's CacheToRegistry.image_manifest says the same).
    "mode": docker_build.CacheMode.MAX,
    "image_manifest": True,
    "oci_media_types": True,
    # A cache that fails to upload costs the next build time, not this deployment.
    "ignore_error": True,
    # The SDK's defaults, set here so that a new default in a later SDK shows in the tag.
    "compression": docker_build.CompressionType.GZIP,
    "compression_level": 0,
    "force_compression": False,
}


@dataclass(frozen=True)
class ImageArgs:
    repository_name: str
    model_id: str
    model_revision: str | None
    """A pinned Hub commit, or None: the Dockerfile's default (the current head at build time)."""
    prebuilt_image: str | None
    """An image pinned by digest (validated by infra/config.py); set, nothing is built."""
    context: Path
    """The build context: the repository root (its .dockerignore selects what is sent)."""


def _expire_untagged(days: int, description: str) -> dict[str, object]:
    return {
        "rulePriority": 1,
        "description": description,
        "selection": {
            "tagStatus": "untagged",
            "countType": "sinceImagePushed",
            "countUnit": "days",
            "countNumber": days,
        },
        "action": {"type": "expire"},
    }


def cache_lifecycle_policy() -> str:
    """Expire replaced cache manifests (untagged) after CACHE_EXPIRY_DAYS."""
    rule = _expire_untagged(
        CACHE_EXPIRY_DAYS, f"replaced build caches after {CACHE_EXPIRY_DAYS} day"
    )
    return json.dumps({"rules": [rule]}, sort_keys=True)


def lifecycle_policy() -> str:
    """Expire untagged layers after a week and keep the newest KEEP_IMAGES images."""
    return json.dumps(
        {
            "rules": [
                _expire_untagged(
                    UNTAGGED_EXPIRY_DAYS, f"untagged images after {UNTAGGED_EXPIRY_DAYS} days"
                ),
                {
                    # `any` must have the lowest priority (highest number) of all rules (ECR docs).
                    "rulePriority": 2,
                    "description": f"keep the newest {KEEP_IMAGES} images",
                    "selection": {
                        "tagStatus": "any",
                        "countType": "imageCountMoreThan",
                        "countNumber": KEEP_IMAGES,
                    },
                    "action": {"type": "expire"},
                },
            ]
        },
        sort_keys=True,
    )


# --- Build context digest ---------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over slash-separated
    paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignore_file(context: Path, dockerfile: Path) -> Path | None:
    """The ignore file the build reads: `<Dockerfile>.dockerignore` if present, else the
    context's `.dockerignore` (pulumi-docker-build v0.0.22 provider/internal/context.go
    getIgnorePatterns, as Docker documents it)."""
    for path in (
        dockerfile.with_name(dockerfile.name + ".dockerignore"),
        context / ".dockerignore",
    ):
        if path.is_file():
            return path
    return None


def dockerignore_rules(
    context: Path, dockerfile: Path | None = None
) -> list[tuple[re.Pattern[str], bool, str]]:
    """(regex, excludes?, pattern) per line of the ignore file; later lines win, as in Docker."""
    path = ignore_file(context, dockerfile or context / "Dockerfile")
    rules = []
    if path is not None:
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line.removeprefix("!").strip().strip("/")
            rules.append((_pattern_regex(pattern), not negated, pattern))
    return rules


def is_ignored(rel: str, rules: Sequence[tuple[re.Pattern[str], bool, str]]) -> bool:
    """Docker's rule: a pattern matching the path or any parent directory applies; the last wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for regex, excludes, _ in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = excludes
    return ignored


def context_files(context: Path, dockerfile: Path | None = None) -> Iterator[str]:
    """Relative paths of the files Docker would send as the build context, sorted."""
    rules = dockerignore_rules(context, dockerfile)
    reincluded = [pattern for _, excludes, pattern in rules if not excludes]
    found: list[str] = []
    for root, dirs, files in os.walk(context):
        rel_root = Path(root).relative_to(context).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        # Prune ignored directories nothing is re-included from (keeps .venv-sized trees unwalked).
        dirs[:] = [
            d
            for d in dirs
            if d not in ALWAYS_IGNORED
            and not (
                is_ignored(rel_root + d, rules)
                and not any(p.startswith(rel_root + d) for p in reincluded)
            )
        ]
        found.extend(rel_root + f for f in files if not is_ignored(rel_root + f, rules))
    yield from sorted(found)


def _hashed_file(path: Path) -> tuple[bytes, str] | None:
    """Content and mode string of a context entry as the build's change detection reads it, or
    None for what it skips. pulumi-docker-build v0.0.22 (provider/internal/context.go) hashes, per
    regular file or symlink of the filtered context, the content (a symlink's target's), the
    slash-separated relative path and `fileMode.String()` of the entry itself (type and permission
    bits: a checkout with another umask, or a `chmod +x`, changes it); it skips directories, other
    file types and symlinks to directories."""
    mode = path.lstat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)) or path.is_dir():
        return None
    return path.read_bytes(), stat.filemode(mode)


def context_digest(context: Path, dockerfile: Path, recipe: Mapping[str, Any]) -> str:
    """A hash of everything the build's change detection compares, so that the tag changes
    whenever the provider would build again (an immutable repository refuses a second push to a
    tag): the context files' paths, contents and modes, the Dockerfile, and `recipe`, the
    Image's other inputs (build args, platform, locations, cache settings: its Diff compares
    them all)."""
    digest = hashlib.sha256()
    for rel in context_files(context, dockerfile):
        hashed = _hashed_file(context / rel)
        if hashed is not None:
            content, mode = hashed
            digest.update(b"\0".join([rel.encode(), content, mode.encode(), b""]))
    digest.update(dockerfile.read_bytes())
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return digest.hexdigest()


def image_tag(model_id: str, digest: str) -> str:
    """An immutable, human-readable tag: the model plus the content digest (same content, same
    tag)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", model_id.lower()).strip("-.")
    return f"{slug[:100]}-{digest[:12]}"


def _relative(path: Path) -> str:
    return os.path.relpath(path, Path.cwd())


def cache_repository_name(repository_name: str) -> str:
    return f"{repository_name}-{CACHE_TAG}"


def build_recipe(args: ImageArgs) -> dict[str, Any]:
    """The Image's inputs that its Diff compares (pulumi-docker-build v0.0.22
    provider/internal/image.go), tags and registry credentials aside: a change to any of them
    builds again, so each goes into the tag. The cache's registry is the image repository's
    (same account and region), so its repository name stands for its address."""
    build_args = {"MODEL_ID": args.model_id}
    if args.model_revision is not None:
        build_args["MODEL_REVISION"] = args.model_revision
    return {
        "buildArgs": build_args,
        "buildOnPreview": BUILD_ON_PREVIEW,
        "cache": {"repository": cache_repository_name(args.repository_name), "tag": CACHE_TAG},
        "cacheTo": dict(CACHE_TO),
        # Relative to the working directory (`infra/`, Pulumi.yaml's `main`, under `pulumi up`:
        # infra/charts.py cites the engine; the repository root in the synth), so neither the
        # preview nor the synth depends on where the checkout lives.
        "context": _relative(args.context),
        "dockerfile": _relative(args.context / "Dockerfile"),
        # The SDK's default, set here so that a new default in a later SDK shows in the tag.
        "network": docker_build.NetworkMode.DEFAULT.value,
        "platforms": [PLATFORM.value],
        "push": True,
    }


class InferenceImage(pulumi.ComponentResource):
    repository: aws.ecr.Repository
    repository_url: pulumi.Output[str]
    image_ref: pulumi.Output[str]
    """`<repository>@sha256:<digest>`: what the Deployment runs."""
    tag: str | None
    """The pushed tag (None for a prebuilt image): model slug + content digest, known at preview."""
    cache_repository: aws.ecr.Repository | None
    """The build's layer cache (None for a prebuilt image)."""

    def __init__(
        self, name: str, args: ImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpu-inference:image:InferenceImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.repository = aws.ecr.Repository(
            f"{name}-repository",
            name=args.repository_name,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            # ECR refuses DeleteRepository while images remain (RepositoryNotEmptyException) unless
            # asked to force it: without this `pulumi destroy` fails on the pushed images. The
            # images belong to the stack; nothing outside it pulls them.
            force_delete=True,
            # KMS with the AWS-managed ECR key: encrypted at rest, no key policy to maintain.
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")
            ],
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=lifecycle_policy(),
            opts=child,
        )
        self.repository_url = self.repository.repository_url
        self.tag = None
        self.cache_repository = None
        if args.prebuilt_image is not None:
            self.image_ref = pulumi.Output.from_input(args.prebuilt_image)
        else:
            self.image_ref = self._build(name, args)
        self.register_outputs({"repositoryUrl": self.repository_url, "imageRef": self.image_ref})

    def _build(self, name: str, args: ImageArgs) -> pulumi.Output[str]:
        recipe = build_recipe(args)
        dockerfile = args.context / "Dockerfile"
        tag = image_tag(args.model_id, context_digest(args.context, dockerfile, recipe))
        self.tag = tag
        self.cache_repository = self._cache_repository(name, args)
        cache = pulumi.Output.concat(self.cache_repository.repository_url, ":", CACHE_TAG)
        token = aws.ecr.get_authorization_token_output(registry_id=self.repository.registry_id)
        image = docker_build.Image(
            f"{name}-image",
            context=docker_build.BuildContextArgs(location=recipe["context"]),
            dockerfile=docker_build.DockerfileArgs(location=recipe["dockerfile"]),
            platforms=[PLATFORM],
            build_args=recipe["buildArgs"],
            push=recipe["push"],
            network=docker_build.NetworkMode(recipe["network"]),
            build_on_preview=BUILD_ON_PREVIEW,
            # Layer cache in ECR (CACHE_TO). A registry cache needs a docker-container builder,
            # not the default docker driver (README "Deploy").
            cache_from=[
                docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache))
            ],
            cache_to=[
                docker_build.CacheToArgs(
                    registry=docker_build.CacheToRegistryArgs(ref=cache, **CACHE_TO)
                )
            ],
            tags=[pulumi.Output.concat(self.repository.repository_url, ":", tag)],
            registries=[
                docker_build.RegistryArgs(
                    address=self.repository.repository_url,
                    username=token.user_name,
                    password=token.password,
                )
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        return pulumi.Output.concat(self.repository.repository_url, "@", image.digest)

    def _cache_repository(self, name: str, args: ImageArgs) -> aws.ecr.Repository:
        """The layer cache: its own repository, because the image repository's tags are
        immutable and the cache tag is rewritten by every build."""
        repository = aws.ecr.Repository(
            f"{name}-cache-repository",
            name=cache_repository_name(args.repository_name),
            image_tag_mutability="MUTABLE",
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")
            ],
            # Like the image repository: destroyed with whatever cache it holds.
            force_delete=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-cache-lifecycle",
            repository=repository.name,
            policy=cache_lifecycle_policy(),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return repository
