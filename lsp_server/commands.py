"""Command ids and code-action titles of the StarChat language server, defined once.

The editor clients mirror these ids (editors/nvim Lua, editors/vscode constants.ts).
"""

EXPLAIN = "starchat.explain"
FIX = "starchat.fix"
CHAT = "starchat.chat"
WRITE_TESTS = "starchat.writeTests"
ADD_DOCSTRING = "starchat.addDocstring"
NEW_CONVERSATION = "starchat.newConversation"
LIST_CONVERSATIONS = "starchat.listConversations"
DELETE_CONVERSATION = "starchat.deleteConversation"
EXPORT_CONVERSATIONS = "starchat.exportConversations"
ACCEPT_COMPLETION = "starchat.acceptCompletion"
CLEAR_FEEDBACK = "starchat.clearFeedback"

#: Commands that generate text with the model (streamed, cancellable).
GENERATING_COMMANDS = (EXPLAIN, FIX, CHAT, WRITE_TESTS, ADD_DOCSTRING)
#: Commands that only touch the conversation store.
CONVERSATION_COMMANDS = (
    NEW_CONVERSATION,
    LIST_CONVERSATIONS,
    DELETE_CONVERSATION,
    EXPORT_CONVERSATIONS,
)
#: The feedback log's commands: the one an accepted inline completion carries, and clearing.
FEEDBACK_COMMANDS = (ACCEPT_COMPLETION, CLEAR_FEEDBACK)
ALL_COMMANDS = GENERATING_COMMANDS + CONVERSATION_COMMANDS + FEEDBACK_COMMANDS

#: Titles shown in the editor's code-action menu.
ACTION_TITLES = {
    EXPLAIN: "StarChat: Explain selection",
    FIX: "StarChat: Fix selection",
    WRITE_TESTS: "StarChat: Write tests for selection",
    ADD_DOCSTRING: "StarChat: Add docstring",
}
