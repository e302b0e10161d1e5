"""Results of the gate's checks, and how they are printed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """One problem a reviewer must fix: where it is and what is wrong (with the fix when there is
    one)."""

    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


@dataclass
class CheckResult:
    """The outcome of one check. It passes when it has no finding and inspected at least one
    thing."""

    name: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Parts not checked for want of a tool this machine may lack (checks/tools.py `report_missing`:
    never in CI), each with how to install it."""
    inspected: int = 0
    """How many files/objects/expressions were looked at: a check that saw nothing has not
    passed, unless it skipped for a missing tool (and says so)."""

    @property
    def passed(self) -> bool:
        return not self.findings and (self.inspected > 0 or bool(self.skipped))

    @property
    def status(self) -> str:
        if not self.passed:
            return "FAIL"
        return "SKIP" if self.inspected == 0 else "PASS"

    def fail(self, subject: str, message: str) -> None:
        self.findings.append(Finding(subject, message))

    def note(self, line: str) -> None:
        self.notes.append(line)

    def skip(self, line: str) -> None:
        if line not in self.skipped:
            self.skipped.append(line)

    def render(self, seconds: float | None = None) -> str:
        took = f", {seconds:.1f}s" if seconds is not None else ""
        lines = [f"[{self.status}] {self.name} ({self.inspected} inspected{took})"]
        lines += [f"    note: {n}" for n in self.notes]
        lines += [f"    skipped: {s}" for s in self.skipped]
        lines += [f"    - {f}" for f in self.findings]
        if not self.findings and self.inspected == 0 and not self.skipped:
            lines.append("    - nothing was inspected: the gate never passes vacuously")
        return "\n".join(lines)
