// Running the server's generating commands with a workDoneToken, so the reply streams in as
// $/progress deltas, and cancelling them ($/cancelRequest through a CancellationToken).
import * as vscode from 'vscode';
import { ExecuteCommandRequest, LanguageClient, WorkDoneProgress } from 'vscode-languageclient/node';
import { DeltaAssembler, ProgressValue } from './deltas';

/** What a streamed command ended with. */
export interface StreamOutcome {
  /** The server's response object (`{conversationId, reply, …}`), absent on cancel/error. */
  result?: Record<string, unknown>;
  /** The final text: the reply, or what streamed before a cancel or an error. */
  text: string;
  cancelled: boolean;
  error?: string;
}

let counter = 0;

/** Runs commands on the current client and can stop all that are running. */
export class Streamer {
  private running = new Set<vscode.CancellationTokenSource>();

  constructor(private readonly getClient: () => LanguageClient | undefined) {}

  /** True while at least one request is streaming. */
  get busy(): boolean {
    return this.running.size > 0;
  }

  /** A command that does not stream (conversation store commands). */
  async plain(command: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const client = await this.ready();
    return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [args] });
  }

  /** Runs a generating command; `onDelta(delta, textSoFar)` sees each delta as it arrives. */
  async run(
    command: string,
    args: Record<string, unknown>,
    onDelta: (delta: string, textSoFar: string) => void,
    external?: vscode.CancellationToken,
  ): Promise<StreamOutcome> {
    let client: LanguageClient;
    try {
      client = await this.ready();
    } catch (e) {
      return { text: '', cancelled: false, error: errorMessage(e) };
    }
    const token = `starchat-vscode-${process.pid}-${++counter}`;
    const assembler = new DeltaAssembler();
    const source = new vscode.CancellationTokenSource();
    const forward = external?.onCancellationRequested(() => source.cancel());
    const progress = client.onProgress(WorkDoneProgress.type, token, (value) => {
      const delta = assembler.accept(value as ProgressValue);
      if (delta !== undefined) {
        onDelta(delta, assembler.text);
      }
    });
    source.token.onCancellationRequested(() => assembler.close());
    this.running.add(source);
    try {
      const result = (await client.sendRequest(
        ExecuteCommandRequest.type,
        { command, arguments: [args], workDoneToken: token },
        source.token,
      )) as Record<string, unknown> | undefined;
      if (source.token.isCancellationRequested || result?.cancelled === true) {
        return { result, text: assembler.text, cancelled: true };
      }
      return { result, text: assembler.finish(result?.reply), cancelled: false };
    } catch (e) {
      if (source.token.isCancellationRequested) {
        return { text: assembler.text, cancelled: true };
      }
      return { text: assembler.text, cancelled: false, error: errorMessage(e) };
    } finally {
      this.running.delete(source);
      progress.dispose();
      forward?.dispose();
      source.dispose();
    }
  }

  /** Cancels every running request; returns how many there were. */
  stopAll(): number {
    const n = this.running.size;
    for (const source of this.running) {
      source.cancel();
    }
    return n;
  }

  private async ready(): Promise<LanguageClient> {
    const client = this.getClient();
    if (!client) {
      throw new Error('The StarChat language server is not running; check starchat.server.command.');
    }
    if (!client.isRunning()) {
      await client.start();
    }
    return client;
  }
}

/** One line for the user from whatever was thrown. */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) {
    return e.message;
  }
  return String(e);
}
