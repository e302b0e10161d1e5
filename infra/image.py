"""The model server image: an ECR repository with ./Dockerfile built and pushed, or a prebuilt one.

Pods reference the image by digest, so what runs is exactly what was scanned and reviewed; a tag can
never be moved under a running Deployment (tags are immutable in the repository as well).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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


def dockerignore_rules(context: Path) -> list[tuple[re.Pattern[str], bool, str]]:
    """(regex, excludes?, pattern) per line of .dockerignore; later lines win, as in Docker."""
    path = context / ".dockerignore"
    rules = []
    if path.exists():
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


def context_files(context: Path) -> Iterator[str]:
    """Relative paths of the files Docker would send as the build context, sorted."""
    rules = dockerignore_rules(context)
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


def context_digest(context: Path, dockerfile: Path, build_args: dict[str, str]) -> str:
    """A hash of everything that determines the image: context files, Dockerfile and build args."""
    digest = hashlib.sha256()
    for rel in context_files(context):
        digest.update(rel.encode() + b"\0" + (context / rel).read_bytes() + b"\0")
    digest.update(dockerfile.read_bytes())
    digest.update(json.dumps(build_args, sort_keys=True).encode())
    digest.update(PLATFORM.value.encode())
    return digest.hexdigest()


def image_tag(model_id: str, digest: str) -> str:
    """An immutable, human-readable tag: the model plus the content digest (same content, same
    tag)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", model_id.lower()).strip("-.")
    return f"{slug[:100]}-{digest[:12]}"


def _relative(path: Path) -> str:
    return os.path.relpath(path, Path.cwd())


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
        build_args = {"MODEL_ID": args.model_id}
        if args.model_revision is not None:
            build_args["MODEL_REVISION"] = args.model_revision
        dockerfile = args.context / "Dockerfile"
        tag = image_tag(args.model_id, context_digest(args.context, dockerfile, build_args))
        self.tag = tag
        self.cache_repository = self._cache_repository(name, args)
        cache = pulumi.Output.concat(self.cache_repository.repository_url, ":", CACHE_TAG)
        token = aws.ecr.get_authorization_token_output(registry_id=self.repository.registry_id)
        image = docker_build.Image(
            f"{name}-image",
            # Relative to the working directory (the project root under `pulumi up` and the
            # synth), so the preview and the synth do not depend on where the checkout lives.
            context=docker_build.BuildContextArgs(location=_relative(args.context)),
            dockerfile=docker_build.DockerfileArgs(location=_relative(dockerfile)),
            platforms=[PLATFORM],
            build_args=build_args,
            push=True,
            # Build on `pulumi up` only (pulumi-docker-build 0.0.22 ImageArgs.build_on_preview; the
            # default, true, builds on every preview). The preview still shows the new tag, which
            # is the content digest above, and still validates the Dockerfile's syntax.
            build_on_preview=False,
            # Layer cache in ECR, every stage (mode max: the torch and model stages are the
            # expensive ones, and they are not in the final image's own layers). ECR accepts a
            # cache only as an OCI image manifest (aws.amazon.com/blogs/containers, "Announcing
            # remote cache support in Amazon ECR for BuildKit clients"; the provider's
            # CacheToRegistry.image_manifest says the same). A registry cache needs a
            # docker-container builder, not the default docker driver (README "Deploy").
            cache_from=[
                docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache))
            ],
            cache_to=[
                docker_build.CacheToArgs(
                    registry=docker_build.CacheToRegistryArgs(
                        ref=cache,
                        mode=docker_build.CacheMode.MAX,
                        image_manifest=True,
                        oci_media_types=True,
                        # A cache that fails to upload costs the next build time, not this
                        # deployment.
                        ignore_error=True,
                    )
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
            name=f"{args.repository_name}-{CACHE_TAG}",
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
