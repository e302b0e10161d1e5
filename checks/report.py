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
    inspected: int = 0
    """How many files/objects/expressions were looked at: a check that saw nothing has not
    passed."""

    @property
    def passed(self) -> bool:
        return not self.findings and self.inspected > 0

    def fail(self, subject: str, message: str) -> None:
        self.findings.append(Finding(subject, message))

    def note(self, line: str) -> None:
        self.notes.append(line)

    def render(self, seconds: float | None = None) -> str:
        status = "PASS" if self.passed else "FAIL"
        took = f", {seconds:.1f}s" if seconds is not None else ""
        lines = [f"[{status}] {self.name} ({self.inspected} inspected{took})"]
        lines += [f"    note: {n}" for n in self.notes]
        lines += [f"    - {f}" for f in self.findings]
        if not self.findings and self.inspected == 0:
            lines.append("    - nothing was inspected: the gate never passes vacuously")
        return "\n".join(lines)
