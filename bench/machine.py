"""Where this machine's CPU and memory go while bench/load.py runs a class: every process's
CPU time and resident memory from Linux's /proc, by kind (browsers, the server, training
workers, the bench); the browsers put behind the server with a CPU control group; the server's
CPUs chosen with `--server-cpus`. Linux only (the benches run on this VM)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def processes():
    """(pid, command line, the fields of /proc/PID/stat after the name) of every process (Linux):
    field 1 is the parent's pid, 11 and 12 the user and system CPU time in clock ticks."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield pid, cmd, stat


def executable(pid: str) -> str:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:
        return ""


BROWSERS_GROUP = Path("/sys/fs/cgroup/cpu/mnist-lab-load-browsers")


def browsers_behind(shares: int = 64):
    """Put the browsers' renderers behind the server: the Playwright driver this process started,
    and so the Chromium it launches (children inherit their parent's group), goes into a CPU
    control group with a small share; Chromium's browser process and its network service (one
    process each, serving every session) then go back to the root group at nice -10. Under
    contention the server, its workers and the browsers' networking get the CPU first and the
    renderers what is left: the browsers stand in for the students' own machines. (Niceness
    alone does not hold: Chromium sets its renderers' priorities itself.) Call it once before
    launching the browser (returns a function to call right after); needs root and cgroup v1's
    cpu controller."""
    group = BROWSERS_GROUP
    me = str(os.getpid())

    drivers = [pid for pid, cmd, stat in processes() if b"run-driver" in cmd and stat[1] == me]
    try:
        group.mkdir(exist_ok=True)
        (group / "cpu.shares").write_text(str(shares))
        for pid in drivers:
            (group / "cgroup.procs").write_text(pid)
    except OSError as exc:
        return None, f"renderers not put behind ({exc})"

    def after_launch():
        table = list(processes())
        parent = {pid: stat[1] for pid, _, stat in table}
        for pid, cmd, stat in table:
            # the browser process: Chromium's executable with no --type, started by the driver
            # directly or through a wrapper script (Debian's headless shell's does not exec)
            browser = (b"--type=" not in cmd and (stat[1] in drivers or parent.get(stat[1]) in drivers)
                       and "chrom" in executable(pid))
            if browser or b"network.mojom.NetworkService" in cmd:
                with contextlib.suppress(OSError):
                    (group.parent / "cgroup.procs").write_text(pid)
                    os.setpriority(os.PRIO_PROCESS, int(pid), -10)

    return after_launch, (f"renderers in the CPU control group {group} (share {shares} against 1024 per server "
                          "thread), Chromium's browser process and network service at nice -10")


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds_by_pid() -> dict[str, tuple[str, float]]:
    """CPU time so far of the browsers, the server and the training workers alive now (Linux /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid, cmd, fields in processes():
        kind = ("browsers" if b"chrom" in cmd else "server" if b"streamlit\0run" in cmd
                else "training workers" if b"-m\0core" in cmd
                else "this bench and Playwright" if b"run-driver" in cmd or pid == str(os.getpid()) else None)
        if kind:
            out[pid] = (kind, (int(fields[11]) + int(fields[12])) / tick)
    return out


class CpuUse:
    """CPU seconds by kind of process, from samples (a process counts from its first sample)."""

    def __init__(self):
        self.first, self.last = {}, {}

    def sample(self):
        for pid, (kind, seconds) in cpu_seconds_by_pid().items():
            self.first.setdefault(pid, seconds)
            self.last[pid] = (kind, seconds)

    def cores(self, wall: float) -> dict[str, float]:
        out = {"browsers": 0.0, "server": 0.0, "training workers": 0.0, "this bench and Playwright": 0.0}
        for pid, (kind, seconds) in self.last.items():
            out[kind] += (seconds - self.first[pid]) / wall
        return out


def split_cpus(text: str) -> tuple[set[int], set[int]]:
    """`--server-cpus`: the CPUs named (e.g. "0,1" or "0-1") and the others this process may use;
    a clear error when they are not all usable or leave none for the browsers."""
    try:
        chosen = set()
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            chosen |= set(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise SystemExit(f"--server-cpus {text!r}: expected CPU numbers such as 0,1 or 0-1") from None
    usable = os.sched_getaffinity(0)
    if not chosen <= usable:
        raise SystemExit(f"--server-cpus {text!r}: this machine lets this process use CPUs {sorted(usable)}")
    if not usable - chosen:
        raise SystemExit(f"--server-cpus {text!r} leaves no CPU for the browsers (this machine has "
                         f"{sorted(usable)})")
    return chosen, usable - chosen
