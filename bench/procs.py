"""Servers under test as child processes: free ports, readiness, cold start, and a cleanup that
always runs.

Each server runs in its own session (process group) so that stopping it also stops anything it
spawned, and the group is killed if it does not exit in time. `install_signal_handlers` turns
SIGTERM/SIGHUP into an exception so that an interrupted benchmark still unwinds through every `with
ServerProcess(...)`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

import httpx

POLL_INTERVAL_S = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C, so `with ServerProcess` stops its server."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)


class ServerError(RuntimeError):
    """A server under test did not start, or died."""


class ServerProcess:
    """`with ServerProcess(...) as server:` starts, waits for ready, stops on exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        host: str,
        port: int,
        ready_path: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 300.0,
        stop_timeout_s: float = 30.0,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.host = host
        self.port = port
        self.ready_path = ready_path
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.cwd = cwd
        """Where the process starts (`python -m` imports from there first)."""
        self.cold_start_s: float | None = None
        """Seconds from spawning the process to the first 200 from the ready probe."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (all threads); None off Linux."""
        return None if self.pid is None else process_cpu_seconds(self.pid)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._spawned_at = time.perf_counter()
            self._process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> float:
        """Poll the ready probe; return and record the cold start in seconds."""
        deadline = time.perf_counter() + self.ready_timeout_s
        url = self.base_url + self.ready_path
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                self.check_alive()
                try:
                    if client.get(url).status_code == 200:
                        self.cold_start_s = time.perf_counter() - self._spawned_at
                        return self.cold_start_s
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(POLL_INTERVAL_S)
        raise ServerError(
            f"{self.name} was not ready at {url} within {self.ready_timeout_s:.0f} s\n"
            + self.log_tail()
        )

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise ServerError(
                f"{self.name} exited with status {self._process.returncode}\n{self.log_tail()}"
            )

    def stop(self) -> int | None:
        """SIGTERM the server's process group, SIGKILL it after `stop_timeout_s`; exit status."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                print(
                    f"{self.name} did not stop in {self.stop_timeout_s:.0f} s: killing",
                    file=sys.stderr,
                )
        # Whatever the leader did, leave nothing of its group behind.
        _signal_group(process.pid, signal.SIGKILL)
        return process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime from /proc/<pid>/stat (fields 14 and 15, after the parenthesised name)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, signum)
