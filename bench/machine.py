"""A stable, readable name for the machine a report was measured on: results/<name>/."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def slug(text: str) -> str:
    """Lower-case, dash-separated, filesystem-safe."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cpu_model() -> str:
    """The CPU model as the kernel reports it (platform.processor() is often empty)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_machine_name() -> str:
    """E.g. `cpu-2c-amd-epyc`: the same hardware shape always lands in the same results folder."""
    return f"cpu-{cpu_count()}c-{slug(cpu_model())}"


def gpu_machine_name(device_name: str) -> str:
    """E.g. `gpu-nvidia-h100-80gb-hbm3` from torch.cuda.get_device_name()."""
    return f"gpu-{slug(device_name)}"
