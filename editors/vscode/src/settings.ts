// Mapping VS Code settings (`starchat.*`) to what the server reads. No VS Code imports.
import { DEFAULT_SERVER_COMMAND, SECTION, SERVER_SETTING_KEYS } from './constants';

/** A read-only view of a configuration section (vscode.WorkspaceConfiguration fits). */
export interface ConfigLike {
  get<T>(key: string): T | undefined;
}

/** The server settings object: `{starchat: {model, generation, context, worker}}`. */
export function serverSettings(config: ConfigLike): { [SECTION]: Record<string, unknown> } {
  const section: Record<string, unknown> = {};
  for (const key of SERVER_SETTING_KEYS) {
    const value = config.get<unknown>(key);
    // Unset objects stay out, so the server applies its own defaults.
    if (value === undefined || value === null) {
      continue;
    }
    if (typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length === 0) {
      continue;
    }
    section[key] = value;
  }
  return { [SECTION]: section };
}

/** How to start the server, or a one-sentence error when the setting is unusable. */
export type ServerLaunch = { command: string; args: string[]; env: Record<string, string> } | { error: string };

/** The server command from `starchat.server.command` (a list) and `starchat.server.env`. */
export function serverLaunch(config: ConfigLike, baseEnv: NodeJS.ProcessEnv = {}): ServerLaunch {
  const raw = config.get<unknown>('server.command') ?? DEFAULT_SERVER_COMMAND;
  const list = typeof raw === 'string' ? [raw, 'lsp'] : raw;
  if (!Array.isArray(list) || list.length === 0 || !list.every((p) => typeof p === 'string' && p !== '')) {
    return { error: 'starchat.server.command must be a list of strings such as ["starchat", "lsp"].' };
  }
  const extra = config.get<Record<string, unknown>>('server.env') ?? {};
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(baseEnv)) {
    if (typeof v === 'string') {
      env[k] = v;
    }
  }
  for (const [k, v] of Object.entries(extra)) {
    env[k] = String(v);
  }
  return { command: list[0], args: list.slice(1), env };
}

/** The document selector: every file, or only the configured language ids. */
export function documentSelector(config: ConfigLike): { scheme: string; language?: string }[] {
  const languages = (config.get<unknown>('filetypes') ?? []) as unknown[];
  const schemes = ['file', 'untitled'];
  if (!Array.isArray(languages) || languages.length === 0) {
    return schemes.map((scheme) => ({ scheme }));
  }
  return schemes.flatMap((scheme) =>
    languages.filter((l): l is string => typeof l === 'string').map((language) => ({ scheme, language })),
  );
}
