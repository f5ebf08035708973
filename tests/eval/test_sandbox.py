"""The sandbox for model-written code: every way out the tests know is contained and reported.

Each escape attempt is a real program run through ``run_python`` (bubblewrap plus the audit
hook); the test checks the host (the file is not there, the server saw no connection, the
evaluator lives) and what the program was told. ``test_the_os_layer_alone_holds`` runs the
same attempts with the audit hook left out, to show the first layer holds by itself.
Where bubblewrap cannot run, these tests are skipped with the reason (-rs) and
``test_no_isolation_refuses_unless_unsafe`` checks the refusal instead.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from training.evaluation.sandbox import SandboxUnavailable, isolation, require_isolation, run_python

ISOLATED = isolation().kind == "bubblewrap"
# Wall-clock limit for programs that must finish: generous, the machine may be busy (a limit
# hit here would read as "timeout", not as the behaviour under test).
SLACK = 90
needs_isolation = pytest.mark.skipif(not ISOLATED, reason=f"no sandbox here: {isolation().detail}")

ATTEMPT = """
import os, sys
def attempt():
{body}
try:
    result = attempt()
    print("ESCAPED", result)
except BaseException as exc:
    print("BLOCKED", type(exc).__name__, str(exc)[:200])
"""


def _program(body: str) -> str:
    return ATTEMPT.format(body="\n".join("    " + line for line in body.strip().splitlines()))


class Host:
    """What a program must not reach: files under ``tmp``, a listening server, our pid."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.canary = tmp / "canary.txt"
        self.canary.write_text("original")
        self.victim = tmp / "victim.txt"
        self.victim.write_text("keep me")
        self.ssh = tmp / "home" / ".ssh"
        self.ssh.mkdir(parents=True)
        (self.ssh / "id_ed25519").write_text("SECRET-KEY-MATERIAL")
        self.pwned = tmp / "pwned"

    def untouched(self) -> bool:
        return (self.canary.read_text() == "original" and self.victim.read_text() == "keep me"
                and not self.pwned.exists() and sorted(p.name for p in self.tmp.iterdir())
                == ["canary.txt", "home", "victim.txt"])


# (name, program body; {pwned}, {canary}, {victim}, {ssh}, {tmp}, {pid} are filled in)
ESCAPES = {
    "ctypes.pythonapi.system": "import ctypes\nreturn ctypes.pythonapi.system(b'touch {pwned}')",
    "ctypes.CDLL(None).system": "import ctypes\nreturn ctypes.CDLL(None).system(b'touch {pwned}')",
    "ctypes libc by name": "import ctypes, ctypes.util\nreturn ctypes.CDLL('libc.so.6').system(b'touch {pwned}')",
    "ctypes memmove into memory": "import ctypes\nb = ctypes.create_string_buffer(8)\nreturn ctypes.memmove(b, b'x' * 8, 8)",
    "os.system": "return os.system('touch {pwned}')",
    "subprocess.run": "import subprocess\nreturn subprocess.run(['touch', '{pwned}'])",
    "_posixsubprocess.fork_exec": ("import _posixsubprocess\nreturn _posixsubprocess.fork_exec("
                                   "[b'/usr/bin/touch'], [b'/usr/bin/touch'], True, (), None, None, -1, -1, -1, -1, -1, -1, "
                                   "-1, -1, False, False, None, None, None, -1, None, False)"),
    "reloading _posixsubprocess": "del sys.modules['_posixsubprocess']\nimport _posixsubprocess\nreturn _posixsubprocess",
    "os.fork": "pid = os.fork()\nif pid == 0:\n    open('{pwned}', 'w').write('x')\n    os._exit(0)\nreturn pid",
    "fork bomb": "while True:\n    os.fork()",
    "os.posix_spawn": "return os.posix_spawn('/usr/bin/touch', ['touch', '{pwned}'], {{}})",
    "os.execv": "os.execv('/bin/sh', ['sh', '-c', 'touch {pwned}'])",
    "write outside the box": "open('{canary}', 'w').write('overwritten')",
    "delete outside the box": "os.remove('{victim}')",
    "rmtree outside the box": "import shutil\nshutil.rmtree('{tmp}')",
    "rename outside the box": "os.rename('{canary}', '{canary}.moved')",
    "read ~/.ssh": "return open('{ssh}/id_ed25519').read()",
    "list the real home": "return os.listdir('/root/.ssh') + os.listdir(os.path.expanduser('~'))",
    "signal the parent": "os.kill(os.getppid(), 9)\nreturn os.getppid()",
    "signal the evaluator": "os.kill({pid}, 15)",
    "socket to a host server": "import socket\ns = socket.socket()\ns.settimeout(2)\nreturn s.connect(('127.0.0.1', {port}))",
    "udp out": "import socket\nreturn socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('1.1.1.1', 53))",
    "gc to reach the hook": "import gc\nreturn len(gc.get_objects())",
    "traceback frame to reach the hook": (
        "try:\n    os.system('true')\nexcept PermissionError as e:\n    tb = e.__traceback__\n"
        "    while tb.tb_next:\n        tb = tb.tb_next\n    return tb.tb_frame.f_locals"),
    "pty.spawn a shell": "import pty\nreturn pty.spawn(['/bin/sh', '-c', 'touch {pwned}'])",
    "raise the limits": "import resource\nreturn resource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
    "write /proc/self/mem": "return open('/proc/self/mem', 'wb')",
}


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


@pytest.fixture(scope="module")
def server():
    """A TCP server on this host's loopback that records every connection it gets."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(srv.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    thread.join(5)
    srv.close()


def _fill(body: str, host: Host, port: int) -> str:
    return body.format(pwned=host.pwned, canary=host.canary, victim=host.victim, ssh=host.ssh, tmp=host.tmp,
                       pid=os.getpid(), port=port)


def test_at_least_fifteen_escapes_are_tried():
    assert len(ESCAPES) >= 15 and "ctypes.pythonapi.system" in ESCAPES


@needs_isolation
@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_each_escape_is_contained_and_reported(name, host, server):
    port, accepted = server
    result = run_python(_program(_fill(ESCAPES[name], host, port)), timeout_s=SLACK, memory_mb=512)
    assert result.isolation == "bubblewrap"
    assert "ESCAPED" not in result.stdout, (name, result.stdout, result.stderr[-500:])
    assert result.stdout.startswith("BLOCKED"), (name, result.stdout, result.stderr[-500:])
    assert host.untouched(), name
    assert accepted == [], name
    assert "SECRET-KEY-MATERIAL" not in result.stdout + result.stderr


@needs_isolation
@pytest.mark.parametrize("name", ["ctypes.pythonapi.system", "os.system", "subprocess.run", "os.fork",
                                  "write outside the box", "delete outside the box", "read ~/.ssh",
                                  "list the real home", "signal the parent", "signal the evaluator",
                                  "socket to a host server", "write /proc/self/mem"])
def test_the_os_layer_alone_holds(name, host, server):
    """Without the audit hook (as if a program found a way past it): the program may run its
    shell or fork, but inside a root of its own with no network, no home and no other process."""
    port, accepted = server
    result = run_python(_program(_fill(ESCAPES[name], host, port)), timeout_s=SLACK, memory_mb=512,
                        audit_hook=False)
    assert host.untouched(), (name, result.stdout, result.stderr[-500:])
    assert accepted == [], name
    assert "SECRET-KEY-MATERIAL" not in result.stdout + result.stderr
    assert os.getpid() > 0  # (we are alive: the signals went nowhere)


@needs_isolation
def test_a_fork_bomb_without_the_hook_hits_the_process_limit(host):
    program = ("import os, time\nn = 0\ntry:\n    while n < 500:\n        if os.fork() == 0:\n"
               "            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as exc:\n"
               "    print('LIMIT', n, type(exc).__name__)\n")
    result = run_python(program, timeout_s=SLACK, memory_mb=512, audit_hook=False)
    assert result.stdout.startswith("LIMIT"), (result.stdout, result.stderr[-500:])
    assert int(result.stdout.split()[1]) <= 20  # MAX_PROCESSES, not 500
    assert host.untouched()


@needs_isolation
def test_memory_bombs_are_stopped():
    big = run_python("x = bytearray(20 * 1024**3)", memory_mb=512, timeout_s=SLACK)
    assert big.status == "memory"
    growing = run_python("chunks = []\nwhile True:\n    chunks.append(b'x' * 10**7)", memory_mb=512, timeout_s=SLACK)
    assert growing.status == "memory"


@needs_isolation
def test_an_infinite_loop_times_out_quickly():
    result = run_python("while True:\n    pass", timeout_s=1.5)
    assert result.status == "timeout"


@needs_isolation
def test_a_sleeping_program_is_killed_with_everything_it_started():
    result = run_python("import time\nprint('started', flush=True)\ntime.sleep(600)\nprint('finished', flush=True)",
                        timeout_s=10, audit_hook=False)
    assert result.status == "timeout" and result.stdout.strip() == "started"  # killed, never 'finished'


@needs_isolation
def test_the_program_sees_only_its_own_world():
    program = ("import os\nprint(sorted(os.listdir('/')))\nprint(os.getuid())\n"
               "print(sorted(l.split(':')[0].strip() for l in open('/proc/self/net/dev').readlines()[2:]))\n"
               "print(os.getppid())\nprint(os.path.exists('/etc/passwd'), os.path.exists('/root/.ssh'))\n")
    result = run_python(program, timeout_s=SLACK)
    assert result.status == "passed", result.stderr
    top, uid, interfaces, ppid, host_files = result.stdout.strip().splitlines()
    assert "home" not in top
    assert uid == "65534" and interfaces == "['lo']" and host_files == "False False"
    assert int(ppid) < 10  # the first process of its own pid namespace, not the evaluator


@needs_isolation
def test_correct_programs_pass_and_write_inside_their_box():
    ok = run_python("assert sum(range(5)) == 10\nprint('done')\nopen('out.txt', 'w').write('fine')",
                    collect=(".txt",), timeout_s=SLACK)
    assert ok.status == "passed" and ok.stdout.strip() == "done" and ok.files == {"out.txt": b"fine"}
    bad = run_python("assert 1 + 1 == 3", timeout_s=SLACK)
    assert bad.status == "failed" and "AssertionError" in bad.stderr
    assert run_python("import sys; sys.exit(3)", timeout_s=SLACK).returncode == 3
    plot = run_python("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])", save_figures=True, collect=(".png",),
                      timeout_s=SLACK)
    assert plot.status == "passed" and list(plot.files) == ["figure_1.png"], plot.stderr[-500:]


def test_no_isolation_refuses_unless_unsafe(monkeypatch):
    from training.evaluation import sandbox

    monkeypatch.setattr(sandbox, "isolation", lambda: sandbox.Isolation("none", "bubblewrap is not installed"))
    with pytest.raises(SandboxUnavailable, match="--unsafe-no-sandbox"):
        run_python("print(1)")
    assert require_isolation(unsafe=True).kind == "none"
    result = run_python("print(1)", unsafe=True, timeout_s=SLACK)  # limits and the audit hook only
    assert result.status == "passed" and result.isolation == "none"
    blocked = run_python(_program("import ctypes\nreturn ctypes.pythonapi.system(b'true')"), unsafe=True,
                         timeout_s=SLACK)
    assert blocked.stdout.startswith("BLOCKED PermissionError")


@needs_isolation
def test_humaneval_scoring_runs_through_the_sandbox():
    """Every HumanEval problem's canonical solution passes its tests inside the sandbox, and a
    wrong one fails: the scoring works with the isolation on (all 164, at most ~2 s each)."""
    from training.evaluation.humaneval import MEMORY_MB, TIMEOUT_S, build_program, load_problems

    problems = load_problems()
    assert len(problems) == 164
    failed = []
    for problem in problems:
        program = build_program(problem, "```python\n" + problem["prompt"] + problem["canonical_solution"] + "\n```",
                                raw=False)
        result = run_python(program, timeout_s=max(TIMEOUT_S, SLACK), memory_mb=MEMORY_MB)
        if result.status != "passed":
            failed.append((problem["task_id"], result.status, result.stderr[-300:]))
    assert failed == []
    wrong = build_program(problems[0], "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```",
                          raw=False)
    assert run_python(wrong, timeout_s=max(TIMEOUT_S, SLACK), memory_mb=MEMORY_MB).status == "failed"
