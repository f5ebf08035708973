// Ids defined once for the extension; the server's ids mirror lsp_server/commands.py.

/** Commands of the StarChat language server (workspace/executeCommand). */
export const ServerCommands = {
  explain: 'starchat.explain',
  fix: 'starchat.fix',
  chat: 'starchat.chat',
  writeTests: 'starchat.writeTests',
  addDocstring: 'starchat.addDocstring',
  newConversation: 'starchat.newConversation',
  listConversations: 'starchat.listConversations',
  deleteConversation: 'starchat.deleteConversation',
  exportConversations: 'starchat.exportConversations',
  // Carried by inline completion items while the feedback log is on; VS Code runs it on accept.
  acceptCompletion: 'starchat.acceptCompletion',
  clearFeedback: 'starchat.clearFeedback',
} as const;

/** Server commands that generate text and stream it as $/progress deltas. */
export const GeneratingCommands: readonly string[] = [
  ServerCommands.explain,
  ServerCommands.fix,
  ServerCommands.chat,
  ServerCommands.writeTests,
  ServerCommands.addDocstring,
];

/**
 * The extension's own commands. vscode-languageclient registers a client-side command for
 * every server command id, so ours must differ from them (hence the `.vscode.` infix).
 */
export const ExtensionCommands = {
  explain: 'starchat.vscode.explain',
  fix: 'starchat.vscode.fix',
  chat: 'starchat.vscode.chat',
  stop: 'starchat.vscode.stop',
  newConversation: 'starchat.vscode.newConversation',
  restartServer: 'starchat.vscode.restartServer',
  clearFeedback: 'starchat.vscode.clearFeedback',
} as const;

/** The settings section, both in VS Code and on the server. */
export const SECTION = 'starchat';
/** Keys of the section that are passed to the server. */
export const SERVER_SETTING_KEYS = ['model', 'generation', 'context', 'worker', 'completion', 'feedback'] as const;
/** The default server command. */
export const DEFAULT_SERVER_COMMAND: readonly string[] = ['starchat', 'lsp'];

export const CLIENT_ID = 'starchat';
export const CLIENT_NAME = 'StarChat';
export const CHAT_PARTICIPANT_ID = 'starchat.vscode.participant';
export const CHAT_PANEL_VIEW_TYPE = 'starchat.vscode.chatPanel';
/** The language model vendor id (package.json's `languageModelChatProviders`). */
export const MODEL_VENDOR = 'starchat';
