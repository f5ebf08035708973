"""Build and load ``model/runtime/native/qmatmul.c`` (AVX2 kernels for 4- and 8-bit weights) on first use.

PyTorch's own int4 CPU kernel is compute-bound on AVX2 (~0.22 ms for a 3072x576 matrix
here); these plain loops read the same weights at memory speed (~0.12 ms) with fp32
activations. The source is compiled once with the system C compiler into the cache dir
(keyed by its hash, ~0.6 s) and loaded with ctypes; its OpenMP loops run on torch's libgomp,
which is already loaded. Without a compiler or AVX2/FMA, or with ``STARCHAT_NATIVE=0``,
``kernels()`` returns None and ``model.runtime.llama`` falls back to PyTorch's kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from .paths import cache_dir

log = logging.getLogger(__name__)
SOURCE = Path(__file__).resolve().parent / "native" / "qmatmul.c"
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _build(target: Path) -> None:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not compiler:
        raise RuntimeError("no C compiler on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp], check=True, capture_output=True, timeout=120)
        os.replace(tmp, target)  # atomic: concurrent builders end with one good file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@lru_cache(maxsize=1)
def kernels() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they cannot run here (the reason is logged)."""
    if os.environ.get("STARCHAT_NATIVE", "1").lower() in ("0", "false", "no"):
        return None
    if not {"avx2", "fma"} <= _cpu_flags():
        log.info("No AVX2/FMA on this CPU: int4 uses PyTorch's kernel.")
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_dir() / "native" / f"qmatmul-{key}.so"
    try:
        if not target.is_file():
            _build(target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning("Could not build the int4 kernels (%s): using PyTorch's.", exc)
        return None
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    lib.q4_matmul.argtypes = [ptr, i32, i32, ptr, ptr, ptr, i32, ptr]
    lib.q8_matmul.argtypes = [ptr, i32, i32, ptr, ptr, i32, ptr]
    lib.q4_matmul.restype = lib.q8_matmul.restype = None
    return lib
