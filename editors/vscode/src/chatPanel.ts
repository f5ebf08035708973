// The chat view: a webview panel showing the conversation as rendered markdown, updated as
// deltas stream in (rendered with VS Code's own markdown engine, throttled). A reply shows
// a cursor until it is finished (class `pending`), so a user waiting for the model's first
// token sees that something is coming.
import * as vscode from 'vscode';
import { CHAT_PANEL_VIEW_TYPE } from './constants';
import { chatPanelCsp } from './csp';
import { throttle, withNotes } from './deltas';

/** A turn being shown: update it while streaming, finish it once. */
export interface PanelTurn {
  update(text: string): void;
  finish(text: string, notes: string[]): void;
}

async function renderMarkdown(text: string): Promise<string> {
  try {
    // The built-in markdown extension exposes its renderer (the preview uses the same one).
    const html = await vscode.commands.executeCommand<string>('markdown.api.render', text);
    if (typeof html === 'string') {
      return html;
    }
  } catch {
    // Fall through to plain text when the markdown extension is disabled.
  }
  const escaped = text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return `<pre>${escaped}</pre>`;
}

export class ChatPanel {
  private panel: vscode.WebviewPanel | undefined;
  private turns = 0;

  constructor(private readonly onSend: (message: string) => void) {}

  /** Opens (or reveals) the panel beside the editor, keeping the editor focused. */
  show(): vscode.WebviewPanel {
    if (this.panel) {
      this.panel.reveal(vscode.ViewColumn.Beside, true);
      return this.panel;
    }
    const panel = vscode.window.createWebviewPanel(
      CHAT_PANEL_VIEW_TYPE,
      'StarChat',
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      { enableScripts: true, retainContextWhenHidden: true },
    );
    panel.webview.html = this.html(panel.webview);
    panel.webview.onDidReceiveMessage((msg: { type: string; text?: string }) => {
      if (msg.type === 'send' && msg.text) {
        this.onSend(msg.text);
      }
    });
    panel.onDidDispose(() => {
      this.panel = undefined;
    });
    this.panel = panel;
    return panel;
  }

  /** Clears the panel for a new conversation. */
  clear(): void {
    void this.panel?.webview.postMessage({ type: 'clear' });
  }

  /** Adds a user turn and an empty reply that streams in. */
  turn(userText: string): PanelTurn {
    const panel = this.show();
    const id = ++this.turns;
    void renderMarkdown(userText).then((html) => panel.webview.postMessage({ type: 'turn', id, html }));
    let latest = '';
    let done = false;
    let seq = 0;
    const push = throttle(() => {
      const text = latest;
      // Renders finish in any order; `seq` lets the page keep only the newest.
      const message = { type: 'reply', id, seq: ++seq, done };
      void renderMarkdown(text).then((html) => this.panel?.webview.postMessage({ ...message, html }));
    }, 100);
    return {
      update: (text: string) => {
        latest = text;
        push();
      },
      finish: (text: string, notes: string[]) => {
        latest = withNotes(text, notes);
        done = true;
        push.flush();
      },
    };
  }

  private html(webview: vscode.Webview): string {
    const nonce = Math.random().toString(36).slice(2) + Date.now().toString(36);
    const csp = chatPanelCsp(webview.cspSource, nonce);
    return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${csp}">
<style>
 body { font-family: var(--vscode-font-family); color: var(--vscode-foreground); padding: 0 12px 90px; }
 .user { border-left: 3px solid var(--vscode-textLink-foreground); padding-left: 8px; margin-top: 16px; }
 .reply { margin: 8px 0 0 11px; }
 .reply.pending::after { content: '\u258D'; animation: blink 1s steps(2, start) infinite; }
 @keyframes blink { to { visibility: hidden; } }
 pre { overflow-x: auto; background: var(--vscode-textCodeBlock-background); padding: 6px; }
 form { position: fixed; bottom: 0; left: 0; right: 0; padding: 8px; background: var(--vscode-editor-background); display: flex; gap: 6px; }
 textarea { flex: 1; resize: vertical; color: var(--vscode-input-foreground); background: var(--vscode-input-background); border: 1px solid var(--vscode-input-border, transparent); }
</style></head>
<body><div id="log"></div>
<form id="f"><textarea id="msg" rows="2" placeholder="Ask StarChat (Ctrl+Enter to send)"></textarea><button type="submit">Send</button></form>
<script nonce="${nonce}">
 const vscode = acquireVsCodeApi();
 const log = document.getElementById('log');
 const msg = document.getElementById('msg');
 function send(e) { if (e) e.preventDefault(); const text = msg.value.trim(); if (text) { vscode.postMessage({ type: 'send', text }); msg.value = ''; } }
 document.getElementById('f').addEventListener('submit', send);
 msg.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send(e); });
 window.addEventListener('message', (event) => {
   const m = event.data;
   if (m.type === 'clear') { log.innerHTML = ''; return; }
   if (m.type === 'turn') {
     const u = document.createElement('div'); u.className = 'user'; u.innerHTML = m.html;
     const r = document.createElement('div'); r.className = 'reply pending'; r.id = 'reply-' + m.id; r.dataset.seq = '0';
     log.appendChild(u); log.appendChild(r);
   } else if (m.type === 'reply') {
     const r = document.getElementById('reply-' + m.id);
     if (!r || m.seq <= Number(r.dataset.seq)) return;
     r.dataset.seq = String(m.seq); r.innerHTML = m.html;
     if (m.done) r.classList.remove('pending');
   }
   window.scrollTo(0, document.body.scrollHeight);
 });
</script></body></html>`;
  }
}
