"""Where a stage writes: only under its work folder (and the model cache).

In a cluster the root filesystem is read-only and an arbitrary UID may have no home;
locally, nothing should land outside the folders the user named. So before torch,
transformers or any other library is imported, every home, cache and temporary folder
those libraries use is pointed into the work folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def confined_environment(work: Path) -> dict[str, str]:
    """The variables that send every library's writes into `work`."""
    home, tmp = work / "home", work / "tmp"
    cache, config = home / ".cache", home / ".config"
    folders = {
        "HOME": home,
        "XDG_CACHE_HOME": cache,
        "XDG_CONFIG_HOME": config,
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "TMPDIR": tmp, "TMP": tmp, "TEMP": tmp,
        "TORCH_HOME": cache / "torch",
        "TORCHINDUCTOR_CACHE_DIR": cache / "torchinductor",
        "PYTORCH_KERNEL_CACHE_PATH": cache / "torch" / "kernels",
        "TRITON_HOME": home,
        "TRITON_CACHE_DIR": cache / "triton",
        "CUDA_CACHE_PATH": cache / "nv" / "ComputeCache",
        "HF_HOME": cache / "huggingface",
        "MPLCONFIGDIR": config / "matplotlib",
        "NUMBA_CACHE_DIR": cache / "numba",
    }
    env = {name: str(path) for name, path in folders.items()}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # workers started by torchrun inherit it
    return env


def make_folders() -> None:
    """Create the confined home and temporary folders: called once the command's input
    is known to be good, so that a refused command leaves nothing behind."""
    for name in ("HOME", "TMPDIR"):
        Path(os.environ[name]).mkdir(parents=True, exist_ok=True)


@contextmanager
def confined_to(work: Path) -> Iterator[Path]:
    """Run the body with every library's writes sent into `work` (restored afterwards,
    for callers in a longer-lived process such as the tests). Folders are made by
    `make_folders`."""
    work = work.absolute()
    env = confined_environment(work)
    saved = {name: os.environ.get(name) for name in env}
    saved_tempdir, saved_bytecode = tempfile.tempdir, sys.dont_write_bytecode
    os.environ.update(env)
    tempfile.tempdir = env["TMPDIR"]  # gettempdir() may have been read already
    sys.dont_write_bytecode = True  # the image's code is read-only and precompiled
    try:
        yield work
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        tempfile.tempdir, sys.dont_write_bytecode = saved_tempdir, saved_bytecode
