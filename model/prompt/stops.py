"""Stop strings on streamed text: show what is safe as soon as it is safe, cut at the first
stop string, never show a stop string's start that the next piece might complete.

One filter for both engines' paths: the torch decoder gives it the whole answer decoded so
far after each token (``Decoder._flush``), llama.cpp's healed completions give it each
streamed piece (``model.prompt.fim.Healing``). Held back at the end of the text, until the
next piece or the end of the answer: a start of a stop string (``"\\n\\n"`` ends an answer,
so a lone ``"\\n"`` waits), and U+FFFD, which a decoder gives for a UTF-8 character whose
last bytes are in the next token.
"""

from __future__ import annotations

from collections.abc import Iterable

REPLACEMENT = "\ufffd"  # a decoded incomplete UTF-8 sequence


class StopFilter:
    """Feed the answer with :meth:`update` (the whole text so far) or :meth:`feed` (the next
    piece); each returns the text that became safe to show. :meth:`finish` returns the rest
    once the answer is over. ``stopped``: a stop string was found (the text ends before it)."""

    def __init__(self, stops: Iterable[str] = ()):
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        self.text = ""  # the answer so far, cut at the first stop string
        self.shown = 0  # characters of ``text`` returned
        self.stopped = False

    def update(self, text: str, final: bool = False) -> str:
        """The whole answer so far (decoded again after each token: only its unshown end may
        change); the newly safe text."""
        if self.stopped:
            return ""
        cuts = [at for stop in self.stops if (at := text.find(stop, max(0, self.shown - len(stop) + 1))) != -1]
        if cuts:
            text, self.stopped, final = text[: min(cuts)], True, True
        self.text = text
        return self._show(len(text) if final else self._safe_end(text))

    def feed(self, piece: str) -> str:
        """The next piece of the answer; the newly safe text."""
        return self.update(self.text + piece)

    def finish(self) -> str:
        """The held-back end, once the answer is over."""
        return self.update(self.text, final=True)

    def _safe_end(self, text: str) -> int:
        end = len(text.rstrip(REPLACEMENT))
        safe = end
        for stop in self.stops:  # the longest end that starts a stop string, of any of them
            for k in range(min(len(stop) - 1, end - self.shown), 0, -1):
                if text.endswith(stop[:k], 0, end):
                    safe = min(safe, end - k)
                    break
        return safe

    def _show(self, upto: int) -> str:
        upto = max(upto, self.shown)
        out, self.shown = self.text[self.shown : upto], upto
        return out
