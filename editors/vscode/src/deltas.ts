// Assembling streamed replies: the server's $/progress reports carry text deltas whose
// concatenation is exactly the final reply. No VS Code imports: unit-tested under node.

/** A $/progress value as the server sends it (begin | report | end). */
export interface ProgressValue {
  kind: 'begin' | 'report' | 'end';
  title?: string;
  message?: string;
}

/** Collects the deltas of one request and reconciles them with the final reply. */
export class DeltaAssembler {
  private parts: string[] = [];
  private closed = false;
  /** True once the server sent `end` on the token. */
  ended = false;

  /** Feeds one progress value; returns the new text (a delta) or undefined. */
  accept(value: ProgressValue): string | undefined {
    if (value.kind === 'end') {
      this.ended = true;
      return undefined;
    }
    if (this.closed || value.kind !== 'report' || !value.message) {
      return undefined;
    }
    this.parts.push(value.message);
    return value.message;
  }

  /** Stops taking deltas (a cancelled request may still stream a little). */
  close(): void {
    this.closed = true;
  }

  /** How many deltas arrived. */
  get count(): number {
    return this.parts.length;
  }

  /** The text streamed so far. */
  get text(): string {
    return this.parts.join('');
  }

  /**
   * The text to show once the response is in: the reply when it differs from what streamed
   * (a report lost or never sent), else the streamed text.
   */
  finish(reply: unknown): string {
    this.closed = true;
    if (typeof reply === 'string' && reply !== this.text) {
      this.parts = [reply];
    }
    return this.text;
  }
}

/** Throttles a callback to at most once per `intervalMs`, always delivering the last call. */
export function throttle(fn: () => void, intervalMs: number): { (): void; flush(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let last = 0;
  const run = () => {
    timer = undefined;
    last = Date.now();
    fn();
  };
  const throttled = () => {
    if (timer) {
      return;
    }
    const wait = Math.max(0, intervalMs - (Date.now() - last));
    timer = setTimeout(run, wait);
  };
  throttled.flush = () => {
    if (timer) {
      clearTimeout(timer);
    }
    run();
  };
  return throttled;
}

/**
 * The reply with notes (`[stopped]`, errors, …) after it as italic paragraphs. A reply cut
 * off inside a fenced code block gets the fence closed first, or the notes would render as
 * code.
 */
export function withNotes(text: string, notes: string[]): string {
  if (!notes.length) {
    return text;
  }
  let open: string | undefined;
  for (const line of text.split('\n')) {
    const fence = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    if (!fence) {
      continue;
    }
    if (open === undefined) {
      open = fence;
    } else if (fence[0] === open[0] && fence.length >= open.length && line.trim() === fence) {
      open = undefined;
    }
  }
  const closed = open === undefined ? text : `${text}${text.endsWith('\n') ? '' : '\n'}${open}`;
  return `${closed}\n\n${notes.map((n) => `_${n}_`).join('\n\n')}`;
}
