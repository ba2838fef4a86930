"""Ray heads started by this test run: find the ones still running, stop them.

Why: ``phitune serve`` starts the shared Ray head in its own session so that it outlives the
API (``service.launch.ray_head``); a test that serves without ``PHITUNE_LOCAL_RAY=per-study``
(a subprocess given a fresh environment, say) left one running on the default port after
``make test`` had ended. Every process the run starts inherits :data:`RUN_MARKER` (set in
``tests/conftest.py``), Ray's GCS server included, so a head is this run's exactly when its
GCS carries this run's marker: a head that another user, another test run or the developer
started is never touched.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

#: Environment variable every process of one test run carries (a random value per run).
RUN_MARKER = "PHITUNE_TEST_RUN"


@dataclass(frozen=True)
class Head:
    """A Ray head's GCS server process and the session it runs in."""

    pid: int
    session: int
    cmdline: str


def _read(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # gone, or not ours to read
        return b""


def _session(pid: int) -> int | None:
    stat = _read(pid, "stat").decode(errors="replace")
    fields = stat.rpartition(")")[2].split()  # after "(comm)": state ppid pgrp session ...
    if len(fields) < 4 or fields[0] == "Z":
        return None
    return int(fields[3])


def carries(pid: int, marker: str) -> bool:
    """Whether process ``pid`` was started with ``RUN_MARKER=marker`` in its environment."""
    return f"{RUN_MARKER}={marker}".encode() + b"\0" in _read(pid, "environ") + b"\0"


def heads_of(marker: str) -> list[Head]:
    """Live Ray heads (GCS servers) started with ``RUN_MARKER=marker``."""
    heads = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        argv = _read(pid, "cmdline").split(b"\0")
        if not argv[0].endswith(b"gcs_server") or not carries(pid, marker):
            continue
        session = _session(pid)
        if session is not None:
            heads.append(Head(pid, session, b" ".join(argv).decode(errors="replace")[:200]))
    return heads


def stop(head: Head) -> None:
    """SIGKILL every process of the head's session, or, for a head in the caller's own
    session (``ray.init`` in-process), its GCS alone.

    Why the whole session is this run's: a process joins a session only by inheriting it or
    by creating a new one of its own (``setsid``), so every member of a session other than
    ours descends from its leader, the ``ray start`` a test ran (its GCS carries our marker;
    Ray renames some workers, which rewrites their environment, so not every member does)."""
    if head.session == os.getsid(0):
        pids = [head.pid]
    else:
        pids = [int(e.name) for e in Path("/proc").iterdir()
                if e.name.isdigit() and _session(int(e.name)) == head.session]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def leftover_heads(marker: str, grace_s: float = 10.0) -> list[Head]:
    """This run's heads still alive after ``grace_s`` (heads stopped a moment ago may still
    be exiting)."""
    deadline = time.monotonic() + grace_s
    while (heads := heads_of(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return heads
