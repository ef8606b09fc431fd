"""A write guard for the trainer's processes, installed by putting this folder on
PYTHONPATH: every file opened for writing and every folder made, renamed, linked or
removed by Python code (the `open`, `os.*` and `tempfile.*` audit events) is appended to
$WRITE_GUARD_LOG as one JSON line. Writes made inside C or Rust libraries (FFmpeg's own
file I/O, safetensors) raise no audit event; their folders are made from Python."""

import json
import os
import sys

_LOG = os.environ.get("WRITE_GUARD_LOG")
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
#: event → (index of the path written, index of the folder descriptor it is relative to)
_PATH_EVENTS = {"os.mkdir": (0, 2), "os.rename": (1, 3), "os.symlink": (1, 2),
                "os.link": (1, 3), "os.truncate": (0, None), "os.remove": (0, 1),
                "os.rmdir": (0, 1), "os.chmod": (0, 2), "os.utime": (0, 3),
                "shutil.copyfile": (1, None), "shutil.copytree": (1, None),
                "shutil.rmtree": (0, 1), "tempfile.mkstemp": (0, None),
                "tempfile.mkdtemp": (0, None)}


def _install(log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(event: str, path: object, dir_fd: object = None) -> None:
        if isinstance(path, int) or path is None:
            return  # a file descriptor: its opening was recorded
        path = os.fsdecode(path)
        base = os.readlink(f"/proc/self/fd/{dir_fd}") if isinstance(dir_fd, int) and \
            dir_fd >= 0 else os.getcwd()  # shutil.rmtree works relative to folder fds
        full = os.path.normpath(os.path.join(base, path))
        os.write(fd, (json.dumps({"event": event, "path": full, "pid": os.getpid()})
                      + "\n").encode())

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & _WRITES):
                record(event, path)
        elif event in _PATH_EVENTS:
            at, fd_at = _PATH_EVENTS[event]
            if len(args) > at:
                record(event, args[at], args[fd_at] if fd_at is not None and
                       len(args) > fd_at else None)

    sys.addaudithook(hook)


if _LOG:
    _install(_LOG)
