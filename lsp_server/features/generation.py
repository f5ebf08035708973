"""The generating commands: explain, fix, chat, write tests, add docstring.

Each one checks its arguments, builds the structured request, streams the worker's deltas
as ``$/progress`` reports, stores the completed turn, and (fix, add docstring) sends a
versioned ``workspace/applyEdit`` (the steps are in :mod:`.jobs`). Cancellation
(``$/cancelRequest`` or ``window/workDoneProgress/cancel``) cancels the handler's task; we
catch that, stop the worker's generation and still answer once, with the partial reply and
``cancelled: true``. For clients that block on commands (Emacs), :mod:`.early_answer`
answers at once and runs the same steps in the background.
"""

from __future__ import annotations

from typing import Any

from . import early_answer
from .jobs import finish, forget_if_new, prepare, stream_reply
from .progress import DeltaStream, make_token


async def run_command(server: Any, command: str, args: dict[str, Any], token: Any) -> dict:
    """Run one generating command and return its result object.

    Clients that block on ``workspace/executeCommand`` (see :mod:`.early_answer`) get the
    answer at once and the result later; the others get the whole result as the answer.
    """
    job = prepare(server, command, args)
    if early_answer.answers_early(server):
        return early_answer.start(server, job)
    try:
        stream = DeltaStream(server, await make_token(server, token), job.title)
        outcome = await stream_reply(server, stream, job.request)
    except BaseException:
        forget_if_new(server, job)
        raise
    return await finish(server, job, stream.sent, outcome)
