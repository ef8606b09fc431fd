"""A process's own peak memory and CPU time, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def peak_rss(pid: int) -> int:
    """VmHWM in bytes (0 once the process is gone). rusage's ru_maxrss is no use for
    children: Linux carries the parent's high-water mark across fork and exec."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
