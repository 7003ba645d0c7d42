"""Stopping cleanly on SIGTERM and SIGINT, within a bounded time, with no process left behind.

A `semindex` command installs one Shutdown. The first SIGTERM or SIGINT becomes a KeyboardInterrupt
in the main thread, so the work in progress unwinds: open transactions roll back, committed work
stays (every stage resumes from it), and a Dagster run executing in this process is interrupted by
Dagster's own handler (it takes the signals over while a run executes) and marked failed. Child
processes each lead a process group of their own (`spawn`); they are asked to stop (SIGINT, which
`dagster dev` treats as its graceful shutdown), then the whole group gets SIGTERM and at last SIGKILL.

A watchdog thread sees every signal through the wake-up fd, whichever Python handler runs, and
bounds the whole stop: SEMINDEX_SHUTDOWN_TIMEOUT seconds after the first signal (or at once on a
second one) it kills the child groups and exits with 128 + the signal number. The embedded
PostgreSQL is never a child: it runs in a session of its own and keeps serving the other processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_code_for(signum: int) -> int:
    """The shell's convention for a command that ended because of a signal."""
    return 128 + signum


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes in process group `group`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)"
        except OSError:
            continue  # it exited while we looked
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM if this process dies without stopping it (even SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # not Linux
        return None

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return set_death_signal


class Shutdown:
    def __init__(self, verb: str, timeout: float, *, resumable: bool = False) -> None:
        self.verb = verb
        self.resumable = resumable
        self.timeout = timeout
        self.signal: int | None = None  # the first SIGTERM or SIGINT received
        self.children: list[subprocess.Popen] = []
        self._deliveries = 0
        self._raised = False
        self._lock = threading.Lock()
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd = -1
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._installed = False
        self._handling = True

    # ---- installing ----------------------------------------------------------------------------
    def install(self, *, handle: bool = True) -> "Shutdown":
        """Take SIGINT and SIGTERM over; with `handle` False only note them (a command whose server
        stops itself on them, as uvicorn does, and exits non-zero here when it was a signal)."""
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers belong to the main thread; an embedding caller keeps its own
        self._handling = handle
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._sockets = (reader, writer)
        for signum in SIGNALS if handle else ():
            self._previous[signum] = signal.signal(signum, self._handle)
        self._previous_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="semindex-shutdown", daemon=True).start()
        self._installed = True
        return self

    def uninstall(self) -> None:
        """Give the signals back (main() returns to a caller that may be a test or another program)."""
        if not self._installed:
            return
        self._installed = False
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if self._sockets:
            reader, writer = self._sockets
            writer.close()  # the watcher reads end-of-file and returns
            with contextlib.suppress(OSError):
                reader.shutdown(socket.SHUT_RDWR)

    # ---- signals -------------------------------------------------------------------------------
    def _handle(self, signum: int, frame) -> None:
        with self._lock:
            if self.signal is None:
                self.signal = signum
            first = not self._raised
            self._raised = True
        if first:
            raise KeyboardInterrupt  # unwinds the main thread's work; the watchdog bounds the rest

    def _watch(self) -> None:
        assert self._sockets is not None
        reader = self._sockets[0]
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in SIGNALS:
                    continue
                with self._lock:
                    self._deliveries += 1
                    deliveries = self._deliveries
                    if self.signal is None:
                        self.signal = signum
                if not self._handling:
                    continue
                if deliveries == 1:
                    threading.Thread(target=self._deadline, name="semindex-shutdown-deadline", daemon=True).start()
                elif deliveries == 2:
                    self._give_up(f"a second {signal_name(signum)}")

    def _deadline(self) -> None:
        time.sleep(self.timeout)
        self._give_up(f"still running {self.timeout:g} s after {signal_name(self.signal or signal.SIGTERM)}")

    def _give_up(self, why: str) -> None:
        for child in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            resume = "; committed work is kept, run again to resume" if self.resumable else ""
            sys.stderr.write(f"semindex {self.verb}: {why}: stopped at once{resume}\n")
            sys.stderr.flush()
        os._exit(exit_code_for(self.signal or signal.SIGTERM))

    # ---- child processes -----------------------------------------------------------------------
    def spawn(self, command: Sequence[str], **options) -> subprocess.Popen:
        """Start `command` as the leader of a new process group that stops with this command."""
        process = subprocess.Popen(
            list(command), process_group=0, preexec_fn=_die_with_parent(), stdin=subprocess.DEVNULL, **options
        )
        self.children.append(process)
        return process

    def stop_children(self) -> None:
        """Each child group: SIGINT to its leader (a graceful stop), then SIGTERM to the whole group,
        then SIGKILL; within the shutdown timeout, leaving a margin before the watchdog's deadline."""
        graceful, terminate = self.timeout * 0.7, self.timeout * 0.2
        for child in self.children:
            group = child.pid
            if not group_members(group):
                continue
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)
            for wait, then in ((graceful, signal.SIGTERM), (terminate, signal.SIGKILL), (2.0, None)):
                deadline = time.monotonic() + wait
                while group_members(group) and time.monotonic() < deadline:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.wait(timeout=0.1)
                if not group_members(group) or then is None:
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, then)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
