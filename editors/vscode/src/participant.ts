// `@starchat` in VS Code's chat view (Chat Participant API), where that view exists.
import * as vscode from 'vscode';
import { chatArgs } from './args';
import { CHAT_PARTICIPANT_ID, ServerCommands } from './constants';
import { Streamer } from './streaming';

/** Registers the participant when this VS Code has the chat API; a no-op otherwise. */
export function registerParticipant(
  context: vscode.ExtensionContext,
  streamer: Streamer,
  newConversation: () => Promise<string | undefined>,
  setConversation: (id: string) => void,
): void {
  const chatApi = (vscode as { chat?: typeof vscode.chat }).chat;
  if (!chatApi?.createChatParticipant) {
    return;
  }
  let participantConversation: string | undefined;
  const handler: vscode.ChatRequestHandler = async (request, chatContext, stream, token) => {
    // A chat view session with no history is a new conversation on the server too.
    if (chatContext.history.length === 0 || !participantConversation) {
      participantConversation = await newConversation();
    }
    const editor = vscode.window.activeTextEditor;
    const doc = editor && !editor.selection.isEmpty ? { uri: editor.document.uri.toString(), range: editor.selection } : undefined;
    const outcome = await streamer.run(
      ServerCommands.chat,
      chatArgs(request.prompt, participantConversation, doc),
      (delta) => stream.markdown(delta),
      token,
    );
    if (typeof outcome.result?.conversationId === 'string') {
      participantConversation = outcome.result.conversationId;
      setConversation(participantConversation);
    }
    if (outcome.error) {
      return { errorDetails: { message: outcome.error } };
    }
    return {};
  };
  const participant = chatApi.createChatParticipant(CHAT_PARTICIPANT_ID, handler);
  participant.iconPath = new vscode.ThemeIcon('comment-discussion');
  context.subscriptions.push(participant);
}
