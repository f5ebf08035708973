import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CHAT_PARTICIPANT_ID, ExtensionCommands, MODEL_VENDOR, ServerCommands } from '../src/constants';

// Compiled to out/test/, so the extension folder is two levels up.
const root = join(__dirname, '..', '..');

test('package.json contributes exactly the extension commands', () => {
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const contributed = manifest.contributes.commands.map((c: { command: string }) => c.command).sort();
  assert.deepEqual(contributed, Object.values(ExtensionCommands).sort());
  assert.equal(manifest.contributes.chatParticipants[0].id, CHAT_PARTICIPANT_ID);
  for (const key of ['starchat.model', 'starchat.generation', 'starchat.context', 'starchat.worker', 'starchat.completion', 'starchat.server.command']) {
    assert.ok(key in manifest.contributes.configuration.properties, key);
  }
});

test('server command ids mirror lsp_server/commands.py', () => {
  const python = readFileSync(join(root, '..', '..', 'lsp_server', 'commands.py'), 'utf8');
  const ids = [...python.matchAll(/^[A-Z_]+ = "(starchat\.[A-Za-z]+)"$/gm)].map((m) => m[1]).sort();
  assert.deepEqual(Object.values(ServerCommands).sort(), ids);
});

test('the editor context menu holds Explain and Fix under a StarChat submenu', () => {
  // VS Code's own chat puts "Explain" and "Fix" in the same menu; flat items titled
  // "Explain selection" / "Fix selection" next to them did not say whose they were.
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const { menus, submenus } = manifest.contributes;
  assert.deepEqual(menus['editor/context'].map((m: { submenu?: string }) => m.submenu), ['starchat.vscode.editorContext']);
  assert.deepEqual(submenus, [{ id: 'starchat.vscode.editorContext', label: 'StarChat' }]);
  const items = menus['starchat.vscode.editorContext'].map((m: { command: string }) => m.command);
  assert.deepEqual(items, [ExtensionCommands.explain, ExtensionCommands.fix]);
});

test('the language model provider is declared (VS Code runs @starchat only with a model selected)', () => {
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  assert.deepEqual(manifest.contributes.languageModelChatProviders, [{ vendor: MODEL_VENDOR, displayName: 'StarChat' }]);
});

test('the feedback log is a setting that is off by default', () => {
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const enabled = manifest.contributes.configuration.properties['starchat.feedback.enabled'];
  assert.equal(enabled.type, 'boolean');
  assert.equal(enabled.default, false);
  assert.match(enabled.markdownDescription, /Nothing is sent anywhere/);
});
