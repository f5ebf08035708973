// StarChat as a language model in VS Code's model picker (Language Model Chat Provider API,
// VS Code 1.104+). VS Code's chat runs a participant's request only when a language model
// is selected for it ("Language model unavailable" otherwise, before the participant is
// called): without a model of ours, `@starchat` never answers on a VS Code without Copilot
// (seen in code-server 4.139 = VS Code 1.139). Requests to this model run `starchat.chat`
// in a fresh server conversation.
import * as vscode from 'vscode';
import { languageModelPrompt, ModelTurn } from './args';
import { MODEL_VENDOR, ServerCommands } from './constants';
import { Streamer } from './streaming';

// The parts of the API that @types/vscode 1.90 (our minimum VS Code) does not declare.
interface ModelInformation {
  id: string;
  name: string;
  family: string;
  version: string;
  detail?: string;
  tooltip?: string;
  maxInputTokens: number;
  maxOutputTokens: number;
  capabilities: { imageInput?: boolean; toolCalling?: boolean | number };
  isUserSelectable?: boolean;
}
interface RequestMessage {
  role: number;
  content: ReadonlyArray<unknown>;
}
interface ModelProvider {
  provideLanguageModelChatInformation(options: unknown, token: vscode.CancellationToken): ModelInformation[];
  provideLanguageModelChatResponse(
    model: ModelInformation,
    messages: readonly RequestMessage[],
    options: unknown,
    progress: vscode.Progress<unknown>,
    token: vscode.CancellationToken,
  ): Promise<void>;
  provideTokenCount(model: ModelInformation, text: string | RequestMessage, token: vscode.CancellationToken): Promise<number>;
}
interface ModelApi {
  registerLanguageModelChatProvider?(vendor: string, provider: ModelProvider): vscode.Disposable;
  selectChatModels?(selector: { vendor: string }): Thenable<unknown[]>;
}
type TextPartClass = new (value: string) => unknown;
/** LanguageModelChatToolMode.Required */
const TOOL_MODE_REQUIRED = 2;

function textOf(message: RequestMessage): string {
  return message.content
    .map((part) => (part && typeof (part as { value?: unknown }).value === 'string' ? (part as { value: string }).value : ''))
    .join('');
}

function turnOf(message: RequestMessage): ModelTurn {
  // LanguageModelChatMessageRole: User = 1, Assistant = 2, System = 3.
  const role = message.role === 2 ? 'assistant' : message.role === 3 ? 'system' : 'user';
  return { role, text: textOf(message) };
}

/** Registers the provider where this VS Code has the API; a no-op otherwise. */
export function registerLanguageModel(context: vscode.ExtensionContext, streamer: Streamer, modelName: () => string): void {
  const api = (vscode as unknown as { lm?: ModelApi }).lm;
  const TextPart = (vscode as unknown as { LanguageModelTextPart?: TextPartClass }).LanguageModelTextPart;
  if (!api?.registerLanguageModelChatProvider || !TextPart) {
    return;
  }
  const provider: ModelProvider = {
    provideLanguageModelChatInformation: () => [
      {
        id: 'starchat',
        name: 'StarChat',
        family: 'starchat',
        version: modelName(),
        detail: modelName(),
        tooltip: `Your local model (${modelName()}) through the StarChat language server`,
        maxInputTokens: 4096,
        maxOutputTokens: 1024,
        // Without Copilot the chat view has only its Agent mode, whose model picker lists
        // only models that take tools. Ours takes them and answers in text, never calling
        // one (which the API allows); a request that requires a tool call is refused.
        capabilities: { imageInput: false, toolCalling: true },
        isUserSelectable: true,
      },
    ],
    async provideLanguageModelChatResponse(_model, messages, options, progress, token) {
      if ((options as { toolMode?: number } | undefined)?.toolMode === TOOL_MODE_REQUIRED) {
        throw new Error('StarChat: this model answers in text and cannot be required to call a tool.');
      }
      const message = languageModelPrompt(messages.map(turnOf));
      if (!message) {
        throw new Error('StarChat: the request has no user message.');
      }
      const outcome = await streamer.run(ServerCommands.chat, { message }, (delta) => progress.report(new TextPart(delta)), token);
      if (outcome.error) {
        throw new Error(`StarChat: ${outcome.error}`);
      }
    },
    // The server counts with the model's own tokenizer when it builds the prompt; this is
    // only VS Code's estimate for its budget (about 4 characters a token).
    provideTokenCount: async (_model, text) => Math.ceil((typeof text === 'string' ? text : textOf(text)).length / 4),
  };
  context.subscriptions.push(api.registerLanguageModelChatProvider(MODEL_VENDOR, provider));
  // The chat view resolves a vendor's models only when someone asks for them; ask now so
  // the model picker (and with it `@starchat`) has our model without a visit to "Manage
  // Language Models".
  void api.selectChatModels?.({ vendor: MODEL_VENDOR });
}
