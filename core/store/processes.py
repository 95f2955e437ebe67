"""Which process runs a run, and whether it is still alive: how the store notices a worker
that died (killed, out of memory, machine rebooted) without anyone telling it.

A pid alone is not enough: pids are reused. On Linux the process's start time (from
/proc/PID/stat) is recorded with the pid, and a process with the same pid but another start
time is a different process.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """An id of the process `pid` that changes if the pid is reused (Linux: start time in ticks)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is not None and os.path.exists("/proc"):
        now = process_start_time(pid)
        if now is None or now != start:
            return False
        try:  # a zombie (killed, not yet reaped by its parent) is dead for us
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return True


def host() -> str:
    return platform.node()


def environment() -> dict:
    """What a run records about where it ran: versions, platform, the project's git commit."""
    import numpy as np
    import torch
    import torchvision

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
           "numpy": np.__version__, "platform": platform.platform(), "host": platform.node()}
    if hasattr(os, "nice"):  # Unix: background jobs train at a lower CPU priority (core.executors.queue)
        env["niceness"] = os.nice(0)
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            env["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                                   text=True, timeout=5)
            env["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return env
