"""Run untrusted, model-written code in a sandbox: a separate process that sees almost nothing.

The first layer is the operating system, through bubblewrap (``bwrap``, Debian package
``bubblewrap``; ``make test`` installs it where it may):

- new user, PID, network, IPC, UTS and cgroup namespaces (``--unshare-all``): no network
  but an unconnected loopback, no other process visible (the evaluator included: nothing to
  signal), uid 65534 inside, every capability dropped;
- a root of its own: ``/usr`` and the Python installation running us (base prefix, venv),
  read-only, a fresh ``/proc`` and minimal ``/dev``, a private ``/tmp`` (tmpfs), and one
  writable directory, the program's box. Nothing else of the host exists inside: no home
  (``~/.ssh``), no ``/etc``, no workspace;
- limits set before exec: address space (memory), CPU time, file size, open files, core
  dumps off, and processes (``RLIMIT_NPROC`` for users; as root, whose process count the
  kernel does not cap, a ``pids`` cgroup where one can be made); a wall-clock limit that kills
  the whole session, and ``--die-with-parent``.

The second layer is inside the interpreter (``sandbox_runner.py``): an audit hook that
refuses new processes, signals, sockets, writes outside the box, loading or calling native
code through ``ctypes`` (``ctypes.pythonapi.system`` was the hole: it ran a shell that the
hook never saw), importing ``_posixsubprocess``, and the frame and gc introspection a
program would need to reach the hook's own state.

``isolation()`` says what runs here. Where bubblewrap cannot run (not installed, user
namespaces off), ``run_python`` refuses with ``SandboxUnavailable`` unless the caller passes
``unsafe=True`` (``starchat eval … --unsafe-no-sandbox``): then only the limits and the
audit hook stand between the program and the machine.
"""

from __future__ import annotations

import contextlib
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
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("sandbox_runner.py")
# Variables that could route traffic or change how Python starts; never passed on.
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
SANDBOX_UID = 65534
MAX_PROCESSES = 16  # processes the program may have at once (it may start none: the hook)
UNSAFE_FLAG = "--unsafe-no-sandbox"


class SandboxUnavailable(RuntimeError):
    """No OS-level isolation here and the caller did not accept running without it."""


@dataclass(frozen=True)
class Isolation:
    """What isolates a program here: ``bubblewrap`` or ``none`` (with the reason)."""

    kind: str
    detail: str


@dataclass
class SandboxResult:
    """What happened to one program: status is passed|failed|timeout|memory."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    files: dict[str, bytes] = field(default_factory=dict)
    isolation: str = "bubblewrap"

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _readonly_roots() -> list[str]:
    """The host directories the program sees, read-only: /usr and the Python running us."""
    roots = ["/usr"]
    for path in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))):
        real = os.path.realpath(path)
        if not any(real == r or real.startswith(r + os.sep) for r in roots):
            roots.append(real)
            if path != real:
                roots.append(path)  # (a symlinked prefix is bound under both names)
    return roots


def bwrap_command(box: str) -> list[str]:
    """The bubblewrap prefix for a program whose writable box is ``box``."""
    cmd = ["bwrap", "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
           "--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    # The private /tmp first: a Python (a virtual environment) that lives under /tmp is bound
    # on top of it, not hidden by it.
    cmd += ["--tmpfs", "/tmp"]
    for root in _readonly_roots():
        cmd += ["--ro-bind", root, root]
    for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(top):  # merged /usr: keep the links
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    for file in ("/etc/ld.so.cache", "/etc/localtime"):
        cmd += ["--ro-bind-try", file, file]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--bind", box, box, "--chdir", box]
    return cmd


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Probe once whether bubblewrap runs a Python program here."""
    if shutil.which("bwrap") is None:
        return Isolation("none", "bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)")
    box = tempfile.mkdtemp(prefix="starchat-sandbox-probe-")
    try:
        probe = subprocess.run([*bwrap_command(box), sys.executable, "-I", "-c", "pass"],
                               capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return Isolation("none", f"bubblewrap could not start ({exc})")
    finally:
        shutil.rmtree(box, ignore_errors=True)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
        return Isolation("none", f"bubblewrap cannot run here ({reason}); user namespaces may be off")
    return Isolation("bubblewrap", "bubblewrap: new user/pid/net/ipc/uts namespaces, read-only /usr and "
                                   "Python, private /tmp, one writable box")


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += 1
    return count


def _pids_cgroup(limit: int) -> Path | None:
    """A fresh cgroup with ``pids.max`` = ``limit`` (for root, whom RLIMIT_NPROC does not cap)."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (base / "cgroup.procs").is_file() or not os.access(base, os.W_OK):
            continue
        if base == Path("/sys/fs/cgroup"):  # cgroup v2: the controller must be on for children
            try:
                if "pids" not in (base / "cgroup.subtree_control").read_text().split():
                    continue
            except OSError:
                continue
        path = base / f"starchat-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(limit))
            return path
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
    return None


def _remove_cgroup(path: Path | None) -> None:
    if path is None:
        return
    for _ in range(50):  # its processes are being reaped
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)
    log.warning("could not remove the sandbox cgroup %s", path)


def _limit_resources(memory_mb: int, cpu_s: int, file_mb: int, processes: int, cgroup: str | None) -> None:
    """Runs in the child between fork and exec."""
    if cgroup is not None:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def _classify(returncode: int | None, stderr: str, timed_out: bool) -> str:
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if returncode == 0:
        return "passed"
    if "MemoryError" in stderr or returncode == -signal.SIGSEGV:
        return "memory"
    return "failed"


def require_isolation(unsafe: bool = False) -> Isolation:
    """The isolation that will run programs; SandboxUnavailable when none and not ``unsafe``."""
    found = isolation()
    if found.kind == "none" and not unsafe:
        raise SandboxUnavailable(f"Model-written code needs a sandbox and none is available: {found.detail}; "
                                 f"install bubblewrap, or pass {UNSAFE_FLAG} to run it with only "
                                 f"resource limits and an audit hook.")
    return found


def run_python(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    file_mb: int = 64,
    save_figures: bool = False,
    collect: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    unsafe: bool = False,
    audit_hook: bool = True,
) -> SandboxResult:
    """Run `code` as a Python program in a fresh sandbox and report how it ended.

    `collect` lists file suffixes (e.g. ".png") whose files are read back from the sandbox
    dir before it is deleted; `save_figures` saves matplotlib figures left open. Raises
    SandboxUnavailable where no isolation runs, unless `unsafe`. `audit_hook=False` leaves
    out the second layer (tests use it to show what the operating system alone holds).
    """
    found = require_isolation(unsafe)
    box = tempfile.mkdtemp(prefix="starchat-sandbox-")
    cgroup = None
    try:
        program = Path(box, "program.py")
        program.write_text(code, encoding="utf-8")
        runner = Path(box, ".runner.py")  # inside the box: the repository is not visible
        runner.write_text(RUNNER.read_text(encoding="utf-8"), encoding="utf-8")
        child_env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
        child_env.update(
            HOME=box, TMPDIR=box, MPLBACKEND="Agg", MPLCONFIGDIR=str(Path(box, ".mpl")),
            OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONHASHSEED="0",
        )
        child_env.update(env or {})
        prefix = bwrap_command(box) if found.kind == "bubblewrap" else []
        cmd = [*prefix, sys.executable, "-I", "-B", str(runner), box, str(program)]
        if save_figures:
            cmd.append("--save-figures")
        if not audit_hook:
            cmd.append("--no-guard")
        uid = os.getuid()
        processes = MAX_PROCESSES + (_processes_of(uid) if uid else 0)
        cgroup = _pids_cgroup(MAX_PROCESSES + 4) if uid == 0 else None  # (+ bwrap's own)
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=box, env=child_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=functools.partial(
                _limit_resources, memory_mb, max(1, int(timeout_s) + 1), file_mb, processes,
                str(cgroup) if cgroup else None,
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
        return SandboxResult(status, proc.returncode, stdout, stderr, duration, files, found.kind)
    finally:
        _remove_cgroup(cgroup)
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
