"""Runs one untrusted program inside the sandbox (started by sandbox.run_python).

Usage: python -I -B sandbox_runner.py SANDBOX_DIR PROGRAM.py [--save-figures]

The second layer of the sandbox (the first is the operating system: sandbox.py). It drops
root privileges where it still has them, installs an audit hook, then runs the program as
__main__. The hook refuses:

- new processes and signals (``os.system``, ``os.exec*``, ``os.fork``, ``subprocess.Popen``,
  ``os.kill``, …); ``_posixsubprocess.fork_exec`` raises no event, so it is replaced before
  the hook goes in and the module cannot be loaded afresh;
- sockets, from their creation on;
- writes, renames and deletions outside SANDBOX_DIR;
- native code through ``ctypes``: every ``ctypes`` event after the hook is in (``dlopen``,
  ``dlsym``, ``call_function``, ``cdata``, …). ``ctypes`` is imported first (numpy imports it),
  and that import makes ``ctypes.pythonapi`` (a handle on the whole process, libc included):
  ``ctypes.pythonapi.system(b"…")`` looked ``system`` up and called it with no event the hook
  refused. Now the lookup (``ctypes.dlsym``) and the call (``ctypes.call_function``) both raise;
- the introspection that reaches the hook's own state: the frames of tracebacks and
  generators (a PermissionError's traceback holds the hook's frame), ``gc.get_objects``/
  ``get_referrers``/``get_referents``, ``sys._current_frames`` and ``sys.addaudithook``. The
  rules live in the hook's closure as frozensets, not in module globals a frame could reach
  (``sys._getframe`` itself stays: ``collections.namedtuple`` needs it).

This file is copied into the sandbox directory and executed there; nothing here is
imported by the evaluator.
"""

import os
import sys

NOBODY = 65534


def open_to_others(path: str) -> bool:
    """Whether `nobody` could read `path`: every directory on the way must be o+rx."""
    path = os.path.realpath(path)
    while True:
        try:
            if os.stat(path).st_mode & 0o005 != 0o005:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def drop_privileges(box: str) -> None:
    """As root (no user namespace: the unsafe mode), become nobody so the OS protects files.

    Skipped where the interpreter lives somewhere nobody cannot read (e.g. under /root):
    the program could not even import the standard library.
    """
    if os.geteuid() != 0:
        return
    needed = {sys.base_prefix, sys.prefix, *[p for p in sys.path if p and os.path.isdir(p)]}
    if not all(open_to_others(p) for p in needed):
        return
    os.chown(box, NOBODY, NOBODY)
    for name in os.listdir(box):
        os.chown(os.path.join(box, name), NOBODY, NOBODY)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def install_guard(box: str) -> None:
    """Refuse, from inside the interpreter, what the program must never do."""
    blocked = frozenset({
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
        "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "urllib.Request",
        "os.chroot", "os.setuid", "os.setgid", "resource.setrlimit", "resource.prlimit",
        "sys.addaudithook", "shutil.chown", "sys._current_frames",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.add_dll_directory",
    })
    blocked_imports = frozenset({"_posixsubprocess", "_xxsubinterpreters", "_testcapi", "_testinternalcapi"})
    frame_attributes = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
    path_events = frozenset({
        "os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod", "os.chown", "os.link",
        "os.symlink", "os.mkdir", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
    })
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    root = os.path.realpath(box) + os.sep
    realpath, join, fsdecode = os.path.realpath, os.path.join, os.fsdecode

    def inside(path) -> bool:
        if isinstance(path, int):  # an already-open descriptor
            return True
        if isinstance(path, bytes):
            path = fsdecode(path)
        full = realpath(join(box, str(path)))
        return (full + os.sep).startswith(root) or full == "/dev/null"

    def hook(event: str, args: tuple) -> None:
        if event.startswith("ctypes."):
            raise PermissionError(f"sandbox: {event} (native code through ctypes) is not allowed")
        if event in blocked:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args and args[0] in blocked_imports:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "object.__getattr__" and len(args) > 1 and args[1] in frame_attributes:
            raise PermissionError(f"sandbox: reading {args[1]} is not allowed")
        if event in path_events:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise PermissionError(f"sandbox: {event} outside the sandbox is not allowed")
        elif event == "open":
            path, mode, flags = (list(args) + [None, None, 0])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags
            )
            if writing and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path} is not allowed")

    sys.addaudithook(hook)


def close_fork_exec() -> None:
    """``_posixsubprocess.fork_exec`` starts a process without any audit event; libraries
    import ``subprocess`` (matplotlib does), so the module is loaded and its function replaced
    before the hook goes in, which then refuses loading it again."""
    import _posixsubprocess
    import subprocess

    def refused(*args, **kwargs):
        raise PermissionError("sandbox: starting a process is not allowed")

    _posixsubprocess.fork_exec = refused
    subprocess._fork_exec = refused  # type: ignore[attr-defined]  # private; what Popen calls


def save_open_figures(box: str) -> None:
    """Save the figures the program left open (plt.show() does nothing under Agg)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    if any(name.lower().endswith(".png") for name in os.listdir(box)):
        return  # the program saved its figures itself
    for number in plt.get_fignums():
        plt.figure(number).savefig(os.path.join(box, f"figure_{number}.png"))


def main() -> int:
    box, program = sys.argv[1], sys.argv[2]
    save_figures = "--save-figures" in sys.argv[3:]
    guard = "--no-guard" not in sys.argv[3:]  # (tests: the operating system's layer alone)
    drop_privileges(box)
    os.chdir(box)
    # ctypes runs native code at import (numpy imports it): before the guard, which then
    # refuses every ctypes event (the handles the import made included).
    import ctypes  # noqa: F401
    import runpy

    if guard:
        close_fork_exec()
        install_guard(box)
    try:
        runpy.run_path(program, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    if save_figures:
        save_open_figures(box)
    return 0


if __name__ == "__main__":
    sys.exit(main())
