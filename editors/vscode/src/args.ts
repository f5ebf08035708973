// Building the argument objects of the server's commands. No VS Code imports.

export interface Position {
  line: number;
  character: number;
}
export interface Range {
  start: Position;
  end: Position;
}
export interface LspDiagnostic {
  range: Range;
  message: string;
  severity?: number;
  source?: string;
  code?: string | number;
}
/** A VS Code diagnostic's fields that matter here (severity 0 = Error … 3 = Hint). */
export interface EditorDiagnostic {
  range: Range;
  message: string;
  severity: number;
  source?: string;
  code?: string | number | { value: string | number };
}

function plainRange(r: Range): Range {
  return {
    start: { line: r.start.line, character: r.start.character },
    end: { line: r.end.line, character: r.end.character },
  };
}

function overlaps(a: Range, b: Range): boolean {
  const before = (p: Position, q: Position) => p.line < q.line || (p.line === q.line && p.character < q.character);
  return !before(a.end, b.start) && !before(b.end, a.start);
}

/** VS Code diagnostics inside `range`, in LSP form (severities shifted to 1 … 4). */
export function diagnosticsIn(range: Range, diagnostics: EditorDiagnostic[]): LspDiagnostic[] {
  return diagnostics
    .filter((d) => overlaps(d.range, range))
    .map((d) => {
      const out: LspDiagnostic = { range: plainRange(d.range), message: d.message, severity: d.severity + 1 };
      if (d.source) {
        out.source = d.source;
      }
      if (d.code !== undefined) {
        out.code = typeof d.code === 'object' ? d.code.value : d.code;
      }
      return out;
    });
}

/** `starchat.explain {textDocument, range, conversationId?}` */
export function explainArgs(uri: string, range: Range, conversationId?: string): Record<string, unknown> {
  const args: Record<string, unknown> = { textDocument: { uri }, range: plainRange(range) };
  if (conversationId) {
    args.conversationId = conversationId;
  }
  return args;
}

/** `starchat.fix {textDocument, range, diagnostics?}` */
export function fixArgs(uri: string, range: Range, diagnostics: LspDiagnostic[] = []): Record<string, unknown> {
  const args: Record<string, unknown> = { textDocument: { uri }, range: plainRange(range) };
  if (diagnostics.length > 0) {
    args.diagnostics = diagnostics;
  }
  return args;
}

/** `starchat.chat {message, conversationId?, textDocument?, range?}`; an empty selection adds no code. */
export function chatArgs(
  message: string,
  conversationId?: string,
  document?: { uri: string; range: Range },
): Record<string, unknown> {
  const args: Record<string, unknown> = { message };
  if (conversationId) {
    args.conversationId = conversationId;
  }
  const r = document?.range;
  if (document && r && (r.start.line !== r.end.line || r.start.character !== r.end.character)) {
    args.textDocument = { uri: document.uri };
    args.range = plainRange(r);
  }
  return args;
}

/** A short title for a turn, e.g. "Explain `app.py` lines 4-6". */
export function turnTitle(verb: string, path: string, range: Range): string {
  const name = path.split(/[\\/]/).pop() ?? path;
  const first = range.start.line + 1;
  // A range ending at column 0 of a line does not include that line.
  const last = range.end.character === 0 && range.end.line > range.start.line ? range.end.line : range.end.line + 1;
  return first === last ? `${verb} \`${name}\` line ${first}` : `${verb} \`${name}\` lines ${first}-${last}`;
}

/** One message of a VS Code language model request, reduced to its text. */
export interface ModelTurn {
  role: 'user' | 'assistant' | 'system';
  text: string;
}

/**
 * The `message` of `starchat.chat` for a VS Code language model request: the last user
 * turn, with the earlier turns of the request quoted before it (the request carries the
 * whole history; the server conversation it runs in is a fresh one).
 */
export function languageModelPrompt(turns: ModelTurn[]): string {
  const spoken = turns.filter((t) => t.text.trim());
  let last = spoken.length - 1;
  while (last >= 0 && spoken[last].role !== 'user') {
    last--;
  }
  if (last < 0) {
    return '';
  }
  const earlier = spoken.slice(0, last).map((t) => `${t.role === 'assistant' ? 'Assistant' : t.role === 'system' ? 'System' : 'User'}: ${t.text.trim()}`);
  const question = spoken[last].text.trim();
  return earlier.length ? `Earlier in this conversation:\n\n${earlier.join('\n\n')}\n\n---\n\n${question}` : question;
}
