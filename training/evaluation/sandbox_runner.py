"""Runs one untrusted program inside the sandbox (started by sandbox.run_python).

Usage: python -I -B sandbox_runner.py SANDBOX_DIR PROGRAM.py [--save-figures]

It drops root privileges, installs an audit hook that refuses writes outside SANDBOX_DIR,
process creation, signals and network use, then runs the program as __main__. This file is
executed in the child process only; nothing here is imported by the evaluator.
"""

import os
import sys

NOBODY = 65534

# Audit events that would let the program leave its box: new processes, signals to other
# processes, network, and loading native code by hand.
BLOCKED_EVENTS = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "urllib.Request",
    "os.chroot", "os.setuid", "os.setgid", "resource.setrlimit", "resource.prlimit",
    "sys.addaudithook", "shutil.chown",
}
# Path-taking events: allowed only inside the sandbox directory.
PATH_EVENTS = {
    "os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod", "os.chown", "os.link",
    "os.symlink", "os.mkdir", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


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
    """As root, become nobody so the OS itself protects the host's files.

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


def libc_like(name) -> bool:
    """ctypes.CDLL(None) or libc would give the program os.system without an audit event.

    Other libraries stay loadable: numpy, pandas and matplotlib load theirs through ctypes.
    """
    if name is None:
        return True
    base = os.path.basename(os.fsdecode(name) if isinstance(name, bytes) else str(name))
    return base.startswith(("libc.", "libc-", "libpthread", "libdl"))


def install_guard(box: str) -> None:
    """Refuse, from inside the interpreter, what the program must never do."""
    root = os.path.realpath(box) + os.sep

    def inside(path) -> bool:
        if isinstance(path, int):  # an already-open descriptor
            return True
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        full = os.path.realpath(os.path.join(box, str(path)))
        return (full + os.sep).startswith(root) or full in ("/dev/null",)

    def hook(event: str, args: tuple) -> None:
        if event == "ctypes.dlopen" and libc_like(args[0] if args else None):
            raise PermissionError("sandbox: loading the C library by hand is not allowed")
        if event in BLOCKED_EVENTS:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event in PATH_EVENTS:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise PermissionError(f"sandbox: {event} outside the sandbox is not allowed")
        elif event == "open":
            path, mode, flags = (list(args) + [None, None, 0])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writing and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path} is not allowed")

    sys.addaudithook(hook)


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
    drop_privileges(box)
    os.chdir(box)
    # ctypes opens the main program itself on import (numpy imports it); do that before the
    # guard, which refuses later hand-made CDLL(None)/libc handles.
    import ctypes  # noqa: F401

    install_guard(box)
    import runpy

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
