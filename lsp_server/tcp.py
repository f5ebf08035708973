"""``starchat lsp --tcp HOST:PORT``: who may connect, and how a client proves it may.

Whoever drives the server can make it read the workspace's files into prompts and write
conversation exports, so TCP is closed by default to everyone but this machine:

- ``HOST`` must be a loopback address (``127.0.0.1``, ``::1``, ``localhost``) unless the user
  passes ``--allow-remote``;
- with ``--allow-remote`` every client must send a token as the first thing it does: in
  ``initialize``, ``initializationOptions.token`` (or ``initializationOptions.starchat.token``).
  It is generated once (``secrets.token_urlsafe``), printed once on stderr when created, and
  stored in ``$STARCHAT_DATA_DIR/lsp-token`` (mode 0600, the directory 0700); later runs read
  it from there. The comparison takes constant time (``protocol.secrets_match``, on bytes).
  A client whose first message is not such an ``initialize`` gets one error answer and is
  disconnected; nothing it sent runs, and the server waits for the next client.
- one client at a time: a second connection while one is served is told so and closed.
- a TCP client is not the user's own editor on stdio: ``exportConversations`` writes only
  inside the workspace for it (``features.conversations``).

See docs/lsp.md ("TCP") for the risk this leaves.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from model.serving.protocol import is_loopback, secrets_match

TOKEN_FILE = "lsp-token"


class TcpRefusal(ValueError):
    """The --tcp address or its token cannot be used; the message is one sentence."""


def check_address(host: str, allow_remote: bool) -> None:
    if not host:
        raise TcpRefusal("--tcp wants HOST:PORT with a host.")
    if not is_loopback(host) and not allow_remote:
        raise TcpRefusal(f"{host} is not a loopback address: anyone who reaches it could drive the "
                         f"server; pass --allow-remote to listen there (clients then need the token).")


def token_path() -> Path:
    from .store import data_dir

    return data_dir() / TOKEN_FILE


def load_or_create_token() -> tuple[str, bool]:
    """(the token, whether it was created now). Created with mode 0600 in a 0700 directory."""
    path = token_path()
    try:
        token = path.read_text(encoding="utf-8").strip()
        if token:
            if path.stat().st_mode & 0o077:
                raise TcpRefusal(f"The token file {path} is readable by other users; "
                                 f"chmod 600 it or delete it to make a new one.")
            return token, False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    os.chmod(path, 0o600)
    return token, True


def token_of(message: Any) -> Any:
    """The token an ``initialize`` request carries, or None."""
    if not isinstance(message, dict) or message.get("method") != "initialize":
        return None
    params = message.get("params")
    options = params.get("initializationOptions") if isinstance(params, dict) else None
    if not isinstance(options, dict):
        return None
    if "token" in options:
        return options["token"]
    section = options.get("starchat")
    return section.get("token") if isinstance(section, dict) else None


def admits(message: Any, token: str) -> bool:
    """Whether ``message`` is an ``initialize`` request carrying ``token``."""
    return isinstance(message, dict) and "id" in message and secrets_match(token_of(message), token)
