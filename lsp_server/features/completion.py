"""Inline completion (LSP 3.18 ``textDocument/inlineCompletion``): ghost text at the cursor.

The request becomes a worker ``fim`` request (``model.prompt.fim`` builds the prompt ids with the
model's own tokenizer): the text before and after the cursor, the document's path, and the
other open documents, most recently edited first. The answer is post-processed
(``model.prompt.completion_text``) and returned as ``InlineCompletionItem``s whose range is
on the cursor's line, or ``null``: one for an automatic request (triggerKind 2, every
keystroke); for an invoked one (triggerKind 1, the user asked) the greedy answer first,
then sampled alternatives, up to ``completion.invokedItems`` different ones.

What a typist expects:
- the latest request per document wins: a new one cancels the one in flight (in the worker
  too; Neovim's client does not cancel for us), and so does an edit of the document;
- an answer for a document version that changed meanwhile is ``null``;
- ``$/cancelRequest`` cancels the request (answered ``RequestCancelled``);
- typing the first characters of a recent suggestion, or coming back to where it was made,
  serves it from a cache (``CompletionCache``); once the user has typed a suggestion to its
  end or accepted it, the next completion is fetched before it is asked for (a prefetch: at
  that position, or on the next line when the suggestion ended its line), and the request
  that comes there waits for it instead of starting another;
- the worker runs chat first (``model.serving.scheduler``: ``plan_round`` on torch,
  ``LlamaCppScheduler._prefill_aside`` on llama.cpp).
Failures (no model, a refused request) are logged and answered ``null``: an editor asks
on every keystroke, so an error per keystroke would only be noise. While the feedback log
is on, each item carries the command that logs its accept (``features/feedback.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any
from urllib.parse import unquote, urlparse

from lsprotocol import types

from model.prompt.completion_text import CompletionCache, Cursor, postprocess

from .model_link import ModelLink

log = logging.getLogger(__name__)

MAX_OTHER_FILES = 4
ALTERNATIVE_TEMPERATURE = 0.8  # sampled alternatives of an invoked request
ALTERNATIVE_TOP_P = 0.95


PREFIX_STEP_CHARS = 1024  # the sent prefix's start moves in steps of this many characters
STATS_METHOD = "starchat/completionStats"  # how recent requests were answered (docs/lsp.md)
STATS_KEPT = 2000


class InlineCompletion:
    """Per-server state: requests in flight, last edits, the cache, the completion model."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.inflight: dict[str, asyncio.Task] = {}
        self.edited: dict[str, float] = {}
        self.cache = CompletionCache()
        self._link: ModelLink | None = None
        self.served_from_cache = 0
        self.prefetch: dict[str, tuple[str, str, asyncio.Task]] = {}  # uri -> (prefix, suffix, task)
        #: How each recent request was answered (``note``), for ``starchat/completionStats``
        #: (benchmarks/bench_completion.py reports model calls apart from the rest).
        self.served: deque[dict] = deque(maxlen=STATS_KEPT)

    def link(self) -> ModelLink:
        """The chat model's link, or one of its own for ``completion.model``."""
        settings = self.server.settings
        spec = settings.completion.model
        if spec is None or spec == settings.model:
            return self.server.link
        if self._link is None:
            self._link = ModelLink(self.server)
        self._link.start(dataclasses.replace(settings, model=spec, backend=()))
        return self._link

    def changed(self, uri: str, changes: Sequence[Any] = ()) -> None:
        """An edit: remember when, stop a completion that can only be stale now, and prefetch
        the next one when the edit completed a suggestion (typed to its end or accepted)."""
        self.edited[uri] = time.monotonic()
        task = self.inflight.get(uri)
        if task is not None and not task.done():
            task.cancel()
        document = self.server.workspace.text_documents.get(uri)
        last = changes[-1] if changes else None
        where = getattr(last, "range", None)  # (a whole-document change has none)
        if document is None or where is None or not self.server.settings.completion.enabled:
            return
        at = document.offset_at_position(where.start) + len(getattr(last, "text", ""))  # the cursor, after it
        prefix, suffix = document.source[:at], document.source[at:]
        if self.cache.typed_through(uri, prefix, suffix):
            if not suffix.split("\n", 1)[0].strip():  # it ended its line: the next one comes after Enter
                prefix += "\n"
            self._start_prefetch(uri, prefix, suffix)

    def _start_prefetch(self, uri: str, prefix: str, suffix: str) -> None:
        old = self.prefetch.pop(uri, None)
        if old is not None:
            old[2].cancel()
        cursor = Cursor.at(prefix, suffix)

        async def fetch() -> str | None:
            try:
                raw = await self._generate(self._request(uri, prefix, suffix, cursor))
            except Exception as exc:  # noqa: BLE001 - as a request: logged, no suggestion there
                log.warning("a prefetched inline completion failed: %s", exc)
                return None
            text = postprocess(raw, cursor)
            if text is not None:
                self.cache.put(uri, prefix, suffix, text)
            return text

        self.prefetch[uri] = (prefix, suffix, asyncio.ensure_future(fetch()))

    async def _prefetched(self, uri: str, prefix: str, suffix: str) -> tuple[bool, str | None]:
        """Wait for the prefetch made for this position, or for one the user is typing past;
        cancel one made for another. ``(True, suggestion)`` when it answers this request
        (``None``: the model had nothing to suggest there), ``(False, None)`` when not."""
        entry = self.prefetch.get(uri)
        if entry is None:
            return False, None
        at_prefix, at_suffix, task = entry
        if at_suffix != suffix or not prefix.startswith(at_prefix):
            task.cancel()
            del self.prefetch[uri]
            return False, None
        if not task.done():
            await asyncio.wait({task})  # (a cancelled request leaves the prefetch running)
        if self.prefetch.get(uri) is entry:
            del self.prefetch[uri]
        if task.cancelled() or task.exception() is not None:
            return False, None
        if prefix == at_prefix:
            return True, task.result()
        rest = self.cache.get(uri, prefix, suffix)  # typed on: its rest, or nothing to go by
        return rest is not None, rest

    def note(self, uri: str, version: int, position: types.Position, source: str, outcome: str,
             started: float) -> None:
        """One request's record for ``starchat/completionStats``: ``source`` cache, prefetch
        or model; ``outcome`` answered, empty (nothing to suggest), stale or cancelled."""
        self.served.append({"uri": uri, "version": version, "line": position.line, "character": position.character,
                            "source": source, "outcome": outcome,
                            "ms": round(1000 * (time.monotonic() - started), 1)})

    def other_files(self, uri: str, budget_chars: int) -> list[dict]:
        """The other open documents, most recently edited (or opened) first."""
        docs = [d for u, d in self.server.workspace.text_documents.items() if u != uri]
        docs.sort(key=lambda d: self.edited.get(d.uri, 0.0), reverse=True)
        return [{"path": self.path_of(d.uri), "text": d.source[:budget_chars]} for d in docs[:MAX_OTHER_FILES]]

    def path_of(self, uri: str) -> str:
        """A path relative to the workspace root where possible (what the model saw in training)."""
        path = PurePath(unquote(urlparse(uri).path))
        root = self.server.workspace.root_path
        if root:
            try:
                return path.relative_to(root).as_posix()
            except ValueError:
                pass
        return path.name

    async def complete(self, params: types.InlineCompletionParams) -> list[types.InlineCompletionItem] | None:
        settings = self.server.settings.completion
        uri = params.text_document.uri
        if not settings.enabled:
            return None
        document = self.server.workspace.text_documents.get(uri)
        if document is None:
            return None
        version = document.version
        source = document.source
        start = end = params.position
        chosen = ""
        info = params.context.selected_completion_info
        if info is not None and info.range.start.line == info.range.end.line == params.position.line:
            start, end, chosen = info.range.start, info.range.end, info.text
        prefix = source[: document.offset_at_position(start)] + chosen
        suffix = source[document.offset_at_position(end) :]
        cursor = Cursor.at(prefix, suffix)
        item_range = types.Range(start=start, end=end)

        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        count = settings.invoked_items if invoked else 1
        started = time.monotonic()
        cached = self.cache.get(uri, prefix, suffix) if count == 1 else None
        if cached is not None:
            self.served_from_cache += 1
            self.note(uri, version, params.position, "cache", "answered", started)
            return [self._item(uri, prefix, suffix, chosen, cached, item_range)]
        if count == 1:
            found, cached = await self._prefetched(uri, prefix, suffix)
            if found:
                current = self.server.workspace.text_documents.get(uri)
                stale = current is None or current.version != version
                outcome = "stale" if stale else "answered" if cached is not None else "empty"
                self.note(uri, version, params.position, "prefetch", outcome, started)
                if stale or cached is None:
                    return None
                self.served_from_cache += 1
                return [self._item(uri, prefix, suffix, chosen, cached, item_range)]

        old = self.inflight.get(uri)
        if old is not None and not old.done():
            old.cancel()  # the latest request per document wins
        request = self._request(uri, prefix, suffix, cursor)
        task = asyncio.ensure_future(self._generate_several(request, count))
        self.inflight[uri] = task
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # $/cancelRequest: stop the generation, then go
            task.cancel()
            self.note(uri, version, params.position, "model", "cancelled", started)
            raise
        finally:
            if self.inflight.get(uri) is task:
                del self.inflight[uri]
        if task.cancelled():
            self.note(uri, version, params.position, "model", "cancelled", started)
            return None
        if task.exception() is not None:
            log.warning("inline completion failed: %s", task.exception())
            return None
        current = self.server.workspace.text_documents.get(uri)
        if current is None or current.version != version:
            self.note(uri, version, params.position, "model", "stale", started)
            return None  # the document changed while the model was answering
        texts: list[str] = []
        for raw in task.result():  # the greedy answer first
            text = postprocess(raw, cursor)
            if text is not None and text not in texts:
                texts.append(text)
        self.note(uri, version, params.position, "model", "answered" if texts else "empty", started)
        if not texts:
            return None
        self.cache.put(uri, prefix, suffix, texts[0])
        return [self._item(uri, prefix, suffix, chosen, text, item_range) for text in texts]

    def _item(self, uri: str, prefix: str, suffix: str, chosen: str, text: str,
              item_range: types.Range) -> types.InlineCompletionItem:
        """One suggestion; while the feedback log is on, with the command its accept runs."""
        command = self.server.feedback.suggest(uri, self.path_of(uri), prefix, suffix, text)
        return types.InlineCompletionItem(insert_text=chosen + text, range=item_range, command=command)

    def _request(self, uri: str, prefix: str, suffix: str, cursor: Cursor) -> dict:
        settings = self.server.settings.completion
        chars = settings.context_tokens * 8  # the worker counts tokens; this only bounds the frame
        # The prefix's start moves in whole steps, not with each keystroke: the worker's prompt
        # (and so the engine's prompt cache) can then start alike from one keystroke to the next.
        start = max(0, len(prefix) - chars)
        start -= start % PREFIX_STEP_CHARS
        return {
            "fim": {
                "prefix": prefix[start:],
                "suffix": suffix[:chars],
                "path": self.path_of(uri),
                "files": self.other_files(uri, chars),
                "template": settings.template,
                "context_tokens": settings.context_tokens,
            },
            "params": {
                "max_new_tokens": settings.max_new_tokens,
                "temperature": 0.0,
                # A hint that saves tokens; postprocess() has the last word.
                "stop": ["\n\n"] if cursor.block_mode else ["\n"],
                # (unset: the worker applies the completion scale the adapter carries)
                **({} if settings.adapter_scale is None else {"adapter_scale": float(settings.adapter_scale)}),
            },
        }

    async def _generate_several(self, request: dict, count: int) -> list[str]:
        """The greedy answer, then sampled ones (seeded: repeatable) until ``count`` differ.

        At most ``2 * (count - 1)`` samples: a confident model repeats itself. One after
        another: each finds the prompt in the worker's cache (llama.cpp's slot, the torch
        engine's prefix cache), where requests side by side would each process it.
        """
        answers = [await self._generate(request)]
        for seed in range(1, 2 * count - 1):
            if len(set(answers)) >= count:
                break
            params = {**request["params"], "temperature": ALTERNATIVE_TEMPERATURE,
                      "top_p": ALTERNATIVE_TOP_P, "seed": seed}
            try:
                answers.append(await self._generate({**request, "params": params}))
            except RuntimeError as exc:  # the greedy answer stands
                log.warning("an alternative inline completion failed: %s", exc)
                break
        return answers

    async def _generate(self, request: dict) -> str:
        """The model's text for ``request``; cancelling this task cancels it in the worker."""
        if self.server.settings.backend and self.server.settings.completion.model is None:
            raise RuntimeError("an OpenAI-compatible chat backend has no FIM; set starchat.completion.model")
        client = await self.link().client()
        text: list[str] = []
        # Leaving this loop early (cancelled) sends the worker a cancel frame.
        async for event in client.generate(request, request_id="fim-" + uuid.uuid4().hex):
            kind = event.get("type")
            if kind == "delta":
                text.append(event.get("text", ""))
            elif kind == "error":
                raise RuntimeError(str(event.get("message")))
        return "".join(text)

    def stats(self) -> dict:
        """``starchat/completionStats``: how the recent requests were answered."""
        return {"served": list(self.served), "served_from_cache": self.served_from_cache}

    async def close(self) -> None:
        for task in [*self.inflight.values(), *(entry[2] for entry in self.prefetch.values())]:
            task.cancel()
        if self._link is not None:
            await self._link.close()


def setup(server: Any) -> InlineCompletion:
    """Register ``textDocument/inlineCompletion`` (and the edit tracking it needs)."""
    feature = InlineCompletion(server)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def on_inline_completion(ls: Any, params: types.InlineCompletionParams):
        return await feature.complete(params)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def on_did_change(ls: Any, params: types.DidChangeTextDocumentParams) -> None:
        feature.changed(params.text_document.uri, params.content_changes)

    @server.feature(STATS_METHOD)
    def on_stats(ls: Any, params: Any) -> dict:
        return feature.stats()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def on_did_open(ls: Any, params: types.DidOpenTextDocumentParams) -> None:
        feature.edited[params.text_document.uri] = time.monotonic()

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def on_did_close(ls: Any, params: types.DidCloseTextDocumentParams) -> None:
        feature.edited.pop(params.text_document.uri, None)
        feature.cache.forget(params.text_document.uri)
        if (entry := feature.prefetch.pop(params.text_document.uri, None)) is not None:
            entry[2].cancel()

    return feature
