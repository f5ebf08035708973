// StarChat for VS Code: starts `starchat lsp`, passes `starchat.*` settings, and offers
// Explain / Fix / Chat / Stop / New conversation with replies streamed into a chat view;
// the status bar says whether the model is loading, ready or failed.
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from 'vscode-languageclient/node';
import { chatArgs, diagnosticsIn, explainArgs, fixArgs, turnTitle } from './args';
import { ChatPanel } from './chatPanel';
import { CLIENT_ID, CLIENT_NAME, ExtensionCommands, GeneratingCommands, SECTION, ServerCommands } from './constants';
import { ProgressValue } from './deltas';
import { registerLanguageModel } from './languageModel';
import { ModelStateTracker, statusText } from './modelState';
import { registerParticipant } from './participant';
import { documentSelector, serverLaunch, serverSettings } from './settings';
import { errorMessage, StreamOutcome, Streamer } from './streaming';

let client: LanguageClient | undefined;
let conversationId: string | undefined;
let streamer: Streamer;
let panel: ChatPanel;
const modelState = new ModelStateTracker();
let statusItem: vscode.StatusBarItem;

function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration(SECTION);
}

/** The model spec in the settings, for the status bar and the model picker. */
function modelName(): string {
  const model = config().get<unknown>('model');
  if (typeof model === 'string' && model) {
    return model;
  }
  const name = (model as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' && name ? name : 'default';
}

function showModelState(): void {
  const { text, tooltip } = statusText(modelState.state, modelName());
  statusItem.text = text;
  statusItem.tooltip = tooltip;
  statusItem.show();
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
      // The client shows the server's "Loading model" progress only while it runs; the
      // status bar keeps what it ended with (ready or failed).
      handleWorkDoneProgress: (token, params, next) => {
        if (modelState.progress(token, params as ProgressValue)) {
          showModelState();
        }
        next(token, params);
      },
    },
  };
  const languageClient = new LanguageClient(CLIENT_ID, CLIENT_NAME, serverOptions, clientOptions);
  languageClient.onDidChangeState((event) => {
    if (event.newState === State.Starting) {
      modelState.starting();
      showModelState();
    } else if (event.newState === State.Stopped) {
      modelState.stopped();
      showModelState();
    }
  });
  // LSP 3.18 textDocument/inlineCompletion (ghost text) is vscode-languageclient 9's only
  // "proposed" feature; it drives VS Code's stable inline completion API.
  languageClient.registerProposedFeatures();
  return languageClient;
}

/** A new server conversation, which becomes the current one. */
async function startConversation(): Promise<string | undefined> {
  conversationId = undefined;
  return ensureConversation();
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

/** Deletes this workspace's feedback log (the server knows where it is) and says what went. */
async function clearFeedback(): Promise<void> {
  try {
    const result = (await streamer.plain(ServerCommands.clearFeedback)) as { deleted?: { path: string }[] } | undefined;
    const deleted = result?.deleted ?? [];
    void vscode.window.showInformationMessage(
      deleted.length ? `StarChat: deleted ${deleted.map((d) => d.path).join(', ')}` : 'StarChat: there is no feedback log to delete.',
    );
  } catch (e) {
    void vscode.window.showErrorMessage(`StarChat: ${errorMessage(e)}`);
  }
}

async function newConversation(): Promise<void> {
  try {
    await startConversation();
    panel.clear();
    panel.show();
  } catch (e) {
    void vscode.window.showErrorMessage(`StarChat: ${errorMessage(e)}`);
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel(CLIENT_NAME);
  statusItem = vscode.window.createStatusBarItem('starchat.vscode.status', vscode.StatusBarAlignment.Left, 10);
  statusItem.name = 'StarChat model';
  streamer = new Streamer(() => client);
  panel = new ChatPanel((message) => void chat(message));
  client = createClient(output);
  if (!client) {
    modelState.stopped();
  }
  showModelState();

  context.subscriptions.push(
    output,
    statusItem,
    vscode.commands.registerCommand(ExtensionCommands.explain, explain),
    vscode.commands.registerCommand(ExtensionCommands.fix, fix),
    vscode.commands.registerCommand(ExtensionCommands.chat, () => chat()),
    vscode.commands.registerCommand(ExtensionCommands.stop, () => {
      const n = streamer.stopAll();
      vscode.window.setStatusBarMessage(n ? 'StarChat: stopped' : 'StarChat: nothing to stop', 3000);
    }),
    vscode.commands.registerCommand(ExtensionCommands.newConversation, newConversation),
    vscode.commands.registerCommand(ExtensionCommands.clearFeedback, clearFeedback),
    vscode.commands.registerCommand(ExtensionCommands.restartServer, async () => {
      await client?.stop();
      client = createClient(output);
      if (!client) {
        modelState.stopped();
        showModelState();
      }
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
  // A chat view session starts its own conversation (not the panel's current one).
  registerParticipant(context, streamer, startConversation, (id) => (conversationId = id));
  registerLanguageModel(context, streamer, modelName);
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
