// What the status bar says about the model: loading, ready, failed, or the server stopped.
// Read from the server's "Loading model" $/progress (the client shows that progress only
// while it runs, so without this the user never learns that the model is ready) and from
// the client's state. No VS Code imports: unit-tested under node.
import { ProgressValue } from './deltas';

/** The title of the server's model loading progress (design.md: `$/progress` "Loading model"). */
export const LOADING_PROGRESS_TITLE = 'Loading model';

export type ModelPhase = 'starting' | 'loading' | 'ready' | 'failed' | 'stopped';

export interface ModelState {
  phase: ModelPhase;
  /** The engine once ready (e.g. `llama.cpp`), else the latest progress message. */
  detail: string;
}

export class ModelStateTracker {
  private loading = new Set<string | number>();
  state: ModelState = { phase: 'starting', detail: '' };

  /** Feeds one `$/progress` value of any token; returns true when the state changed. */
  progress(token: string | number, value: ProgressValue): boolean {
    if (value.kind === 'begin') {
      if (value.title !== LOADING_PROGRESS_TITLE) {
        return false;
      }
      this.loading.add(token);
      this.state = { phase: 'loading', detail: value.message ?? '' };
      return true;
    }
    if (!this.loading.has(token)) {
      return false;
    }
    if (value.kind === 'report') {
      this.state = { phase: 'loading', detail: value.message ?? this.state.detail };
      return true;
    }
    this.loading.delete(token);
    // The server ends with "Model ready (ENGINE)" or "Model failed".
    const ready = /^Model ready(?: \((.*)\))?/.exec(value.message ?? '');
    this.state = ready ? { phase: 'ready', detail: ready[1] ?? '' } : { phase: 'failed', detail: value.message ?? '' };
    return true;
  }

  /** The language server is starting (again). */
  starting(): void {
    this.loading.clear();
    this.state = { phase: 'starting', detail: '' };
  }

  /** The language server stopped (or failed to start). */
  stopped(): void {
    this.loading.clear();
    this.state = { phase: 'stopped', detail: '' };
  }
}

/** The status bar text (with a codicon) and tooltip for a state of model `model`. */
export function statusText(state: ModelState, model: string): { text: string; tooltip: string } {
  switch (state.phase) {
    case 'starting':
      return { text: '$(loading~spin) StarChat: starting', tooltip: 'Starting the StarChat language server' };
    case 'loading':
      return { text: '$(loading~spin) StarChat: loading model', tooltip: `Loading the model ${model}${state.detail ? ` (${state.detail})` : ''}` };
    case 'ready':
      return { text: '$(check) StarChat: model ready', tooltip: `Model ${model} ready${state.detail ? ` on ${state.detail}` : ''}` };
    case 'failed':
      return { text: '$(error) StarChat: model failed', tooltip: `The model ${model} could not be loaded; see the StarChat output` };
    case 'stopped':
      return { text: '$(debug-disconnect) StarChat: server not running', tooltip: 'The StarChat language server is not running; run "StarChat: Restart language server"' };
  }
}
