"""Background processes of the embedded stack: start detached, wait until healthy, stop by group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """A component failed to install, start or answer; the message says where to look."""


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"


@dataclass
class Service:
    name: str
    command: Sequence[str]
    healthy: Callable[[], bool]
    state_dir: Path
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 120.0
    ready_file: Path | None = None

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would (for fault tests)."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)

    def start(self) -> bool:
        """Start the service unless it already runs; True when this call started it."""
        if self.pid() is not None:
            self.wait_healthy()
            return False
        for folder in (self.pid_file.parent, self.log_file.parent, self.cwd):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        if self.ready_file:
            self.ready_file.unlink(missing_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                list(self.command),
                cwd=self.cwd,
                env=os.environ | self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        self.wait_healthy(process)
        return True

    def wait_healthy(self, process: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {process.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{tail(self.log_file)}"
                )
            if self.healthy():
                return
            time.sleep(0.5)
        raise StackError(
            f"{self.name} is not healthy after {self.start_timeout_s:.0f} s; "
            f"last lines of {self.log_file}:\n{tail(self.log_file)}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the whole process group (SIGTERM, then SIGKILL); True when something was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if self.ready_file:
            self.ready_file.unlink(missing_ok=True)
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        _signal_group(pid, signal.SIGKILL)
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
