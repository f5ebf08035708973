// StarChat for VS Code: starts `starchat lsp`, passes `starchat.*` settings, and offers
// Explain / Fix / Chat / Stop / New conversation with replies streamed into a chat view.
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
} from 'vscode-languageclient/node';
import { chatArgs, diagnosticsIn, explainArgs, fixArgs, turnTitle } from './args';
import { ChatPanel } from './chatPanel';
import { CLIENT_ID, CLIENT_NAME, ExtensionCommands, GeneratingCommands, SECTION, ServerCommands } from './constants';
import { registerParticipant } from './participant';
import { documentSelector, serverLaunch, serverSettings } from './settings';
import { errorMessage, StreamOutcome, Streamer } from './streaming';

let client: LanguageClient | undefined;
let conversationId: string | undefined;
let streamer: Streamer;
let panel: ChatPanel;

function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration(SECTION);
}

function createClient(output: vscode.OutputChannel): LanguageClient | undefined {
  const launch = serverLaunch(config(), process.env);
  if ('error' in launch) {
    void vscode.window.showErrorMessage(launch.error);
    return undefined;
  }
  const serverOptions: ServerOptions = {
    command: launch.command,
    args: launch.args,
    options: { env: launch.env },
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: documentSelector(config()),
    initializationOptions: serverSettings(config()),
    outputChannel: output,
    middleware: {
      // Code actions from the lightbulb run the server's ids; route the generating ones
      // through our streaming path so their replies show up in the chat view.
      executeCommand: async (command, args, next) => {
        if (GeneratingCommands.includes(command)) {
          const editor = vscode.window.activeTextEditor;
          return runInChat(command, (args?.[0] ?? {}) as Record<string, unknown>, editor?.document);
        }
        return next(command, args);
      },
    },
  };
  const languageClient = new LanguageClient(CLIENT_ID, CLIENT_NAME, serverOptions, clientOptions);
  // LSP 3.18 textDocument/inlineCompletion (ghost text) is vscode-languageclient 9's only
  // "proposed" feature; it drives VS Code's stable inline completion API.
  languageClient.registerProposedFeatures();
  return languageClient;
}

async function ensureConversation(): Promise<string | undefined> {
  if (conversationId) {
    return conversationId;
  }
  const result = (await streamer.plain(ServerCommands.newConversation)) as { conversationId?: string } | undefined;
  conversationId = result?.conversationId;
  return conversationId;
}

function notesFor(command: string, outcome: StreamOutcome): string[] {
  const notes: string[] = [];
  if (outcome.cancelled) {
    notes.push('[stopped]');
  }
  if (outcome.error) {
    notes.push(`Error: ${outcome.error}`);
  }
  const truncated = outcome.result?.truncated;
  if (Array.isArray(truncated) && truncated.length > 0) {
    notes.push(`context cut to fit the model: ${truncated.join(', ')}`);
  } else if (typeof truncated === 'string' && truncated) {
    notes.push(`context cut to fit the model: ${truncated}`);
  }
  if (command === ServerCommands.fix && !outcome.cancelled && !outcome.error) {
    notes.push(outcome.result?.applied ? 'fix applied to the editor' : 'no edit applied');
  }
  return notes;
}

/** Runs a generating server command, streaming its reply into the chat view. */
async function runInChat(command: string, args: Record<string, unknown>, document?: vscode.TextDocument): Promise<unknown> {
  try {
    if (command !== ServerCommands.fix && !args.conversationId) {
      args.conversationId = await ensureConversation();
    }
  } catch (e) {
    void vscode.window.showErrorMessage(`StarChat: ${errorMessage(e)}`);
    return undefined;
  }
  const range = args.range as Parameters<typeof turnTitle>[2] | undefined;
  const verb = command === ServerCommands.fix ? 'Fix' : command === ServerCommands.explain ? 'Explain' : 'Ask';
  const title =
    typeof args.message === 'string'
      ? args.message
      : range && document
        ? turnTitle(verb, document.uri.fsPath, range)
        : verb;
  const turn = panel.turn(title);
  const outcome = await streamer.run(command, args, (_delta, text) => turn.update(text));
  turn.finish(outcome.text, notesFor(command, outcome));
  if (outcome.error) {
    void vscode.window.showErrorMessage(`StarChat: ${outcome.error}`);
  }
  const id = outcome.result?.conversationId;
  if (typeof id === 'string' && command !== ServerCommands.fix) {
    conversationId = id;
  }
  return outcome.result;
}

function selectionOrWarn(): { editor: vscode.TextEditor; range: vscode.Range } | undefined {
  const editor = vscode.window.activeTextEditor;
  if (!editor || editor.selection.isEmpty) {
    void vscode.window.showWarningMessage('StarChat: select some code first.');
    return undefined;
  }
  return { editor, range: editor.selection };
}

async function explain(): Promise<void> {
  const sel = selectionOrWarn();
  if (sel) {
    await runInChat(ServerCommands.explain, explainArgs(sel.editor.document.uri.toString(), sel.range), sel.editor.document);
  }
}

async function fix(): Promise<void> {
  const sel = selectionOrWarn();
  if (!sel) {
    return;
  }
  const uri = sel.editor.document.uri;
  const diagnostics = diagnosticsIn(sel.range, vscode.languages.getDiagnostics(uri));
  await runInChat(ServerCommands.fix, fixArgs(uri.toString(), sel.range, diagnostics), sel.editor.document);
}

async function chat(message?: string): Promise<void> {
  const text = message ?? (await vscode.window.showInputBox({ prompt: 'Ask StarChat', placeHolder: 'How do I…' }));
  if (!text) {
    panel.show();
    return;
  }
  const editor = vscode.window.activeTextEditor;
  const doc = editor && !editor.selection.isEmpty ? { uri: editor.document.uri.toString(), range: editor.selection } : undefined;
  await runInChat(ServerCommands.chat, chatArgs(text, undefined, doc), editor?.document);
}

async function newConversation(): Promise<void> {
  conversationId = undefined;
  try {
    await ensureConversation();
    panel.clear();
    panel.show();
  } catch (e) {
    void vscode.window.showErrorMessage(`StarChat: ${errorMessage(e)}`);
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel(CLIENT_NAME);
  streamer = new Streamer(() => client);
  panel = new ChatPanel((message) => void chat(message));
  client = createClient(output);

  context.subscriptions.push(
    output,
    vscode.commands.registerCommand(ExtensionCommands.explain, explain),
    vscode.commands.registerCommand(ExtensionCommands.fix, fix),
    vscode.commands.registerCommand(ExtensionCommands.chat, () => chat()),
    vscode.commands.registerCommand(ExtensionCommands.stop, () => {
      const n = streamer.stopAll();
      vscode.window.setStatusBarMessage(n ? 'StarChat: stopped' : 'StarChat: nothing to stop', 3000);
    }),
    vscode.commands.registerCommand(ExtensionCommands.newConversation, newConversation),
    vscode.commands.registerCommand(ExtensionCommands.restartServer, async () => {
      await client?.stop();
      client = createClient(output);
      await client?.start();
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration(SECTION)) {
        return;
      }
      if (event.affectsConfiguration(`${SECTION}.server`) || event.affectsConfiguration(`${SECTION}.filetypes`)) {
        const choice = await vscode.window.showInformationMessage('StarChat: restart the server to apply the new command?', 'Restart');
        if (choice) {
          await vscode.commands.executeCommand(ExtensionCommands.restartServer);
        }
        return;
      }
      await client?.sendNotification(DidChangeConfigurationNotification.type, { settings: serverSettings(config()) });
    }),
    { dispose: () => void client?.stop() },
  );
  registerParticipant(context, streamer, () => ensureConversation(), (id) => (conversationId = id));
  if (client) {
    try {
      await client.start();
    } catch (e) {
      void vscode.window.showErrorMessage(`StarChat: the server did not start (${errorMessage(e)}); check starchat.server.command.`);
    }
  }
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
