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
#: event → index of the path argument that is written
_PATH_EVENTS = {"os.mkdir": 0, "os.rename": 1, "os.symlink": 1, "os.link": 1,
                "os.truncate": 0, "os.remove": 0, "os.rmdir": 0, "os.chmod": 0,
                "os.utime": 0, "shutil.copyfile": 1, "shutil.copytree": 1,
                "shutil.rmtree": 0, "tempfile.mkstemp": 0, "tempfile.mkdtemp": 0}


def _install(log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(event: str, path: object) -> None:
        if isinstance(path, int) or path is None:
            return  # a file descriptor: its opening was recorded
        path = os.fsdecode(path)
        full = os.path.normpath(os.path.join(os.getcwd(), path))
        os.write(fd, (json.dumps({"event": event, "path": full, "pid": os.getpid()})
                      + "\n").encode())

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & _WRITES):
                record(event, path)
        elif event in _PATH_EVENTS and len(args) > _PATH_EVENTS[event]:
            record(event, args[_PATH_EVENTS[event]])

    sys.addaudithook(hook)


if _LOG:
    _install(_LOG)
