"""Run untrusted generated code in a subprocess with time, memory and network limits.

Layers, each useful alone: a fresh temp dir as the working dir; rlimits on address space,
CPU time, file size and open files; a new session whose whole process group is killed on
timeout; a private network namespace (`unshare --net`) where the host allows it; as root,
the program runs as `nobody`; and inside the interpreter an audit hook (sandbox_runner.py)
refuses writes outside the temp dir, new processes, signals and sockets.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("sandbox_runner.py")
# Variables that could route traffic or change how Python starts; never passed on.
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


@dataclass
class SandboxResult:
    """What happened to one program: status is passed|failed|timeout|memory."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=1)
def network_isolation_prefix() -> tuple[str, ...]:
    """The command prefix that gives the child no network, or () where none works here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    for prefix in ((unshare, "--net", "--"), (unshare, "--map-root-user", "--net", "--")):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return prefix
    log.warning("unshare --net is not permitted here; the sandbox relies on its socket guard")
    return ()


def _limit_resources(memory_mb: int, cpu_s: int, file_mb: int) -> None:
    """Runs in the child between fork and exec."""
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _classify(returncode: int | None, stderr: str, timed_out: bool) -> str:
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if returncode == 0:
        return "passed"
    if "MemoryError" in stderr or returncode == -signal.SIGSEGV:
        return "memory"
    return "failed"


def run_python(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    file_mb: int = 64,
    save_figures: bool = False,
    collect: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> SandboxResult:
    """Run `code` as a Python program in a fresh sandbox and report how it ended.

    `collect` lists file suffixes (e.g. ".png") whose files are read back from the sandbox
    dir before it is deleted; `save_figures` saves matplotlib figures left open.
    """
    box = tempfile.mkdtemp(prefix="starchat-sandbox-")
    try:
        program = Path(box, "program.py")
        program.write_text(code, encoding="utf-8")
        child_env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
        child_env.update(
            HOME=box, TMPDIR=box, MPLBACKEND="Agg", MPLCONFIGDIR=str(Path(box, ".mpl")),
            OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONHASHSEED="0",
        )
        child_env.update(env or {})
        cmd = [*network_isolation_prefix(), sys.executable, "-I", "-B", str(RUNNER), box, str(program)]
        if save_figures:
            cmd.append("--save-figures")
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=box, env=child_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=functools.partial(
                _limit_resources, memory_mb, max(1, int(timeout_s) + 1), file_mb
            ),
        )
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            out, err = proc.communicate()
        duration = time.monotonic() - start
        stdout = out.decode("utf-8", "replace")[-20000:]
        stderr = err.decode("utf-8", "replace")[-20000:]
        status = _classify(proc.returncode, stderr, timed_out)
        files = _collect(box, collect) if collect else {}
        return SandboxResult(status, proc.returncode, stdout, stderr, duration, files)
    finally:
        shutil.rmtree(box, ignore_errors=True)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _collect(box: str, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    found = {}
    for path in sorted(Path(box).rglob("*")):
        if path.is_file() and path.suffix.lower() in suffixes and ".mpl" not in path.parts:
            found[str(path.relative_to(box))] = path.read_bytes()
    return found
