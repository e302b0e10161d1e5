"""Entry point the Pulumi CLI runs for `pulumi preview --policy-pack policy` (see
PulumiPolicy.yaml).

The pack imports the GPU node spec from infra/gpu_spec.py, the program's single source of truth for
the GPU taint and labels, so the repository root goes on the import path first.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.pack import PACK_NAME, resource_policies

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=list(resource_policies()),
)
