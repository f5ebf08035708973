"""The StarChat language server: ``create_server()`` puts the features together."""

from __future__ import annotations

import asyncio
import logging
import sys
from threading import Event
from typing import Any, BinaryIO

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.lsp.server import LanguageServer

from . import commands
from .config import SECTION, Settings, parse_settings, section_of
from .features import completion
from .features.code_actions import KINDS, code_actions
from .features.feedback import FeedbackLog
from .features.model_link import ModelLink
from .jsonrpc import INVALID_REQUEST, error_response, read_messages
from .protocol import StarChatProtocol
from .store import ConversationStore

log = logging.getLogger(__name__)

VERSION = "0.1.0"


class StarChatServer(LanguageServer):
    """A LanguageServer that holds the settings, the model link and the conversations."""

    protocol: StarChatProtocol

    def __init__(self) -> None:
        super().__init__("starchat-lsp", VERSION, protocol_cls=StarChatProtocol)
        self.settings = Settings()
        self.link = ModelLink(self)
        self.feedback = FeedbackLog(self)
        self.cancel_on_token: dict[Any, asyncio.Task] = {}
        #: ``clientInfo`` of ``initialize`` (decides the answer mode, see early_answer).
        self.client_info: types.ClientInfo | None = None
        self._store: ConversationStore | None = None
        self._tasks: set[asyncio.Future] = set()
        #: Serving a TCP client (not the user's own editor on stdio): exports stay in the workspace.
        self.over_tcp = False
        #: The process's exit code once serving ended (LSP: 1 for exit without shutdown).
        self.exit_code = 0

    @property
    def store(self) -> ConversationStore:
        """Conversations of this workspace (opened on first use)."""
        if self._store is None:
            workspace = self.workspace
            root = workspace.root_uri
            if root is None and workspace.folders:
                root = next(iter(workspace.folders.values())).uri
            self._store = ConversationStore(root or "(no workspace)")
        return self._store

    @property
    def converter(self) -> Any:
        """The cattrs converter of the protocol (LSP objects <-> JSON)."""
        return self.protocol._converter

    def keep_task(self, task: asyncio.Future) -> None:
        """Keep a background task referenced and log its failure."""
        self._tasks.add(task)

        def done(t: asyncio.Future) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task failed", exc_info=t.exception())

        task.add_done_callback(done)

    def apply_settings(self, raw: Any) -> None:
        """Take new settings; bad values -> a warning to the user and the defaults."""
        settings, problems = parse_settings(section_of(raw))
        for problem in problems:
            log.warning("%s", problem)
            self.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Warning, message=problem)
            )
        self.settings = settings

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors pygls reports (the client has been answered already): log them."""
        if isinstance(error, JsonRpcException) and not error.message:
            return
        log.error("server error (%s): %s", getattr(source, "__name__", source), error)

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve on stdio until ``exit`` or end of input; :attr:`exit_code` says how it ended.

        Like pygls' own loop, but each body goes unparsed to ``StarChatProtocol.receive``.
        """
        self._stop_event = Event()
        reader = StdinAsyncReader(stdin or sys.stdin.buffer, self.thread_pool)
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        self._serve(read_messages(self._stop_event, reader, self.protocol.receive, self.protocol.refuse))

    def start_tcp(self, host: str, port: int, token: str | None = None) -> None:
        """Serve one client at a time on TCP (the same message handling as stdio).

        With ``token``, a client must send it in ``initialize`` first (``lsp_server.tcp``); one
        that does not is disconnected and the server waits for the next. The session of an
        admitted client (or any client, without a token) ends the server when it ends.
        """
        self._stop_event = stop_event = Event()
        self.over_tcp = True
        busy = False

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal busy
            if busy:
                writer.write(_frame(error_response(None, INVALID_REQUEST, "Another client is connected; "
                                                   "this server serves one at a time.")))
                writer.close()
                return
            busy = True
            protocol = self.protocol
            protocol.required_token, protocol.admitted, protocol.disconnected = token, False, False
            protocol.set_writer(writer)  # type: ignore[arg-type]  # pygls does the same
            try:
                await read_messages(stop_event, reader, protocol.receive, protocol.refuse)
            finally:
                busy = False
                writer.close()
            if token is None or protocol.admitted:
                self.shutdown()

        async def serve() -> None:
            self._server = await asyncio.start_server(connection, host, port)
            async with self._server:
                await self._server.serve_forever()

        self._serve(serve())

    def _serve(self, main: Any) -> None:
        try:
            asyncio.run(main)
        except BrokenPipeError:
            log.error("the connection to the client is lost; shutting down")
        except SystemExit as exc:  # the exit notification: 0 after shutdown, else 1 (LSP)
            self.exit_code = exc.code if isinstance(exc.code, int) else 1
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass
        finally:
            self.shutdown()


def create_server() -> StarChatServer:
    """A StarChat server with every feature registered (not yet running)."""
    server = StarChatServer()

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: StarChatServer, params: types.InitializeParams) -> None:
        ls.client_info = params.client_info
        ls.apply_settings(params.initialization_options)

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: StarChatServer, params: types.InitializedParams) -> None:
        # The model warms up in the worker while the editor goes on.
        ls.link.start(ls.settings)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_configuration(ls: StarChatServer, params: types.DidChangeConfigurationParams):
        raw = params.settings
        if not (isinstance(raw, dict) and SECTION in raw):
            # Pull model: the notification carries nothing useful, so ask for the section.
            workspace = getattr(ls.client_capabilities, "workspace", None)
            if not (workspace and workspace.configuration):
                return
            answer = await ls.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])
            )
            raw = answer[0] if answer else None
            if raw is None:
                # The client has no settings of ours (Eglot pulls right after connecting):
                # keep those of initializationOptions instead of resetting to defaults.
                return
        ls.apply_settings(raw)
        ls.link.start(ls.settings)

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=False),
    )
    def on_code_action(ls: StarChatServer, params: types.CodeActionParams):
        return code_actions(ls, params)

    inline_completion = completion.setup(server)

    @server.feature(types.SHUTDOWN)
    async def on_shutdown(ls: StarChatServer, params: Any) -> None:
        await inline_completion.close()
        await ls.link.close()
        await ls.feedback.close()

    # Registered so that executeCommandProvider lists them; StarChatProtocol runs them.
    for command_id in commands.ALL_COMMANDS:
        server.command(command_id)(_listed_only)

    return server


def _listed_only(*args: Any) -> None:  # pragma: no cover - never called
    raise RuntimeError("StarChatProtocol handles StarChat commands")


def run(tcp: str | None = None, allow_remote: bool = False) -> int:
    """Serve on stdio, or on TCP when ``tcp`` is ``"HOST:PORT"``; returns the exit code.

    TCP is loopback-only unless ``allow_remote``, and then needs the token (``lsp_server.tcp``);
    raises ``tcp.TcpRefusal`` with a sentence when the address cannot be used.
    """
    from .tcp import TcpRefusal, check_address, load_or_create_token, token_path

    server = create_server()
    if tcp:
        host, _, port = tcp.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise TcpRefusal(f"--tcp wants HOST:PORT, not {tcp!r}.")
        check_address(host, allow_remote)
        token = None
        if allow_remote:
            token, created = load_or_create_token()
            if created:  # shown once; later runs find it in the file
                sys.stderr.write(f"starchat lsp: token for clients (shown once, stored in {token_path()}): {token}\n")
            else:
                sys.stderr.write(f"starchat lsp: clients need the token stored in {token_path()}\n")
            sys.stderr.flush()
        server.start_tcp(host, int(port), token)
    else:
        server.start_io()
    return server.exit_code


def _frame(message: dict) -> bytes:
    import json

    body = json.dumps(message).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
