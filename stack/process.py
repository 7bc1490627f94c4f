"""Background processes of the embedded stack: start detached, wait until healthy, stop by group."""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iotpipe.config import ENV_PREFIX


class StackError(RuntimeError):
    """A component failed to install, start or answer; the message says where to look."""


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"


class Liveness(enum.Enum):
    STOPPED = "stopped"  # no pid file: never started, or stopped on purpose
    RUNNING = "running"
    DEAD = "dead"  # the pid file names a process that is gone (or a zombie): it crashed


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

    @property
    def restarts_file(self) -> Path:
        return self.state_dir / "pids" / f"{self.name}.restarts"

    @property
    def waiting_file(self) -> Path | None:
        """Where a service that waits out an outage says what it waits for (one line)."""
        return self.ready_file.with_suffix(".waiting") if self.ready_file else None

    def pid(self) -> int | None:
        pid = self._recorded_pid()
        return pid if pid is not None and _alive(pid) else None

    def liveness(self) -> Liveness:
        pid = self._recorded_pid()
        if pid is None:
            return Liveness.STOPPED
        return Liveness.RUNNING if _alive(pid) else Liveness.DEAD

    def restarts(self) -> int:
        try:
            return int(self.restarts_file.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def count_restart(self) -> None:
        self.restarts_file.write_text(str(self.restarts() + 1))

    def waiting(self) -> str:
        """What the service says it is waiting for, or "" when it is not waiting."""
        try:
            return self.waiting_file.read_text().strip() if self.waiting_file else ""
        except FileNotFoundError:
            return ""

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One starter or stopper at a time, across processes (the supervisor and `iotpipe up/down`)."""
        path = self.state_dir / "pids" / f"{self.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

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
        self._forget_readiness()
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                list(self.command),
                cwd=self.cwd,
                env=inherited_environment() | self.env,
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
        """Stop the whole process group (SIGTERM, then SIGKILL); True when something was running.

        Removing the pid file first tells the supervisor that the stop is on purpose.
        """
        with self.lock():
            pid = self.pid()
            self.pid_file.unlink(missing_ok=True)
            self.restarts_file.unlink(missing_ok=True)
            self._forget_readiness()
            if pid is None:
                return False
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            _signal_group(pid, signal.SIGKILL)
            return True

    def _forget_readiness(self) -> None:
        for path in (self.ready_file, self.waiting_file):
            if path is not None:
                path.unlink(missing_ok=True)


def inherited_environment() -> dict[str, str]:
    """This process's environment without its IOTPIPE_* variables: a child's configuration is handed, not inherited."""
    return {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; reaps it when it is a dead child of this process."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    return running(pid)


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie.

    A process killed while its parent (say pytest, which started it through ``Stack.up()``) has
    not reaped it stays a zombie that ``kill(pid, 0)`` reports alive; only /proc tells.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    try:
        return process_state(Path(f"/proc/{pid}/stat").read_text()) not in ZOMBIE_STATES
    except FileNotFoundError:
        return False


# /proc/<pid>/stat states of a process that has exited: zombie, dead.
ZOMBIE_STATES = frozenset("ZX")


def process_state(stat: str) -> str:
    """The state letter of a /proc/<pid>/stat line: "1234 (name) S ...", where the name may hold ")"."""
    return stat[stat.rindex(")") + 2]
