"""The sandbox: limits hold, and nothing the program does reaches the host."""

import os
import socket
import threading
import time

from training.evaluation.sandbox import network_isolation_prefix, run_python


def test_a_correct_program_passes_and_a_failing_one_fails():
    ok = run_python("assert sum(range(5)) == 10\nprint('done')")
    assert ok.status == "passed" and ok.stdout.strip() == "done"
    bad = run_python("assert 1 + 1 == 3")
    assert bad.status == "failed" and "AssertionError" in bad.stderr
    assert run_python("import sys; sys.exit(3)").returncode == 3


def test_an_infinite_loop_times_out_quickly():
    result = run_python("while True:\n    pass", timeout_s=1.5)
    assert result.status == "timeout"  # an endless loop ends only through the limit


def test_a_sleeping_child_is_killed_with_its_process_group():
    result = run_python("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)", timeout_s=2)
    assert result.status == "timeout"
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 1
    for pid in pids:  # the sleeping child is gone, not left to sleep out its 60 s
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), pid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_memory_bombs_are_stopped():
    big = run_python("x = bytearray(20 * 1024**3)", memory_mb=512)
    assert big.status == "memory"
    growing = run_python("chunks = []\nwhile True:\n    chunks.append(b'x' * 10**7)", memory_mb=512, timeout_s=20)
    assert growing.status == "memory"


def test_the_host_is_untouched(tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("original")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    program = f"""
import os, shutil, subprocess
attempts = [
    lambda: open({str(canary)!r}, "w").write("overwritten"),
    lambda: os.remove({str(victim)!r}),
    lambda: shutil.rmtree({str(tmp_path)!r}),
    lambda: os.kill(os.getppid(), 9),
    lambda: os.system("touch {tmp_path}/pwned"),
    lambda: subprocess.run(["touch", "{tmp_path}/pwned2"]),
    lambda: os.rename({str(canary)!r}, {str(canary)!r} + ".moved"),
]
for attempt in attempts:
    try:
        attempt()
    except Exception as exc:
        print(type(exc).__name__)
open("inside.txt", "w").write("writes inside the sandbox are fine")
"""
    result = run_python(program, collect=(".txt",))
    assert result.status == "passed", result.stderr
    assert result.stdout.split() == ["PermissionError"] * 7
    assert canary.read_text() == "original"
    assert victim.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["canary.txt", "victim.txt"]
    assert result.files == {"inside.txt": b"writes inside the sandbox are fine"}


def test_no_network_even_to_a_server_on_this_host():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    server.settimeout(5)

    def accept():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        result = run_python(
            f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\nprint('connected')"
        )
    finally:
        thread.join()
        server.close()
    assert result.status == "failed" and "connected" not in result.stdout
    assert accepted == []


def test_network_namespace_is_used_where_the_host_allows_it():
    prefix = network_isolation_prefix()
    if prefix:  # then even without the guard, only an unconnected loopback exists
        assert "--net" in prefix
    # /proc/self/net/dev lists the interfaces of the process's own network namespace.
    program = "print(sorted(l.split(':')[0].strip() for l in open('/proc/self/net/dev').readlines()[2:]))"
    result = run_python(program)
    assert result.status == "passed", result.stderr
    if prefix:
        assert result.stdout.strip() == "['lo']"
