import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chatArgs, diagnosticsIn, explainArgs, fixArgs, languageModelPrompt, turnTitle } from '../src/args';
import { ExtensionCommands, GeneratingCommands, ServerCommands } from '../src/constants';

const range = { start: { line: 3, character: 0 }, end: { line: 5, character: 30 } };

test('explain and fix arguments follow the server contract', () => {
  assert.deepEqual(explainArgs('file:///a.py', range, 'c1'), { textDocument: { uri: 'file:///a.py' }, range, conversationId: 'c1' });
  assert.deepEqual(explainArgs('file:///a.py', range), { textDocument: { uri: 'file:///a.py' }, range });
  assert.deepEqual(fixArgs('file:///a.py', range), { textDocument: { uri: 'file:///a.py' }, range });
});

test('ranges are copied to plain objects (VS Code Range objects carry getters)', () => {
  class P {
    constructor(readonly line: number, readonly character: number) {}
    get isZero() {
      return this.line === 0;
    }
  }
  const r = { start: new P(1, 2), end: new P(3, 4) };
  const json = JSON.parse(JSON.stringify(explainArgs('u', r)));
  assert.deepEqual(json.range, { start: { line: 1, character: 2 }, end: { line: 3, character: 4 } });
});

test('diagnostics in the range become LSP diagnostics', () => {
  const diags = [
    { range: { start: { line: 4, character: 2 }, end: { line: 4, character: 9 } }, message: 'undefined name', severity: 0, source: 'pyflakes', code: { value: 'F821' } },
    { range: { start: { line: 20, character: 0 }, end: { line: 20, character: 1 } }, message: 'far away', severity: 1 },
    { range: { start: { line: 5, character: 0 }, end: { line: 5, character: 3 } }, message: 'hint', severity: 3, code: 7 },
  ];
  const found = diagnosticsIn(range, diags);
  assert.deepEqual(found, [
    { range: diags[0].range, message: 'undefined name', severity: 1, source: 'pyflakes', code: 'F821' },
    { range: diags[2].range, message: 'hint', severity: 4, code: 7 },
  ]);
  assert.deepEqual(fixArgs('u', range, found).diagnostics, found);
});

test('chat adds the selection only when it is not empty', () => {
  assert.deepEqual(chatArgs('hi'), { message: 'hi' });
  const empty = { start: { line: 2, character: 4 }, end: { line: 2, character: 4 } };
  assert.deepEqual(chatArgs('hi', 'c', { uri: 'u', range: empty }), { message: 'hi', conversationId: 'c' });
  assert.deepEqual(chatArgs('hi', undefined, { uri: 'u', range }), { message: 'hi', textDocument: { uri: 'u' }, range });
});

test('turn titles name the file and the lines', () => {
  assert.equal(turnTitle('Explain', '/home/me/proj/area.py', range), 'Explain `area.py` lines 4-6');
  assert.equal(turnTitle('Fix', 'C:\\proj\\a.py', { start: { line: 0, character: 0 }, end: { line: 1, character: 0 } }), 'Fix `a.py` line 1');
});

test('extension command ids never collide with the server ids', () => {
  const server = new Set<string>(Object.values(ServerCommands));
  for (const id of Object.values(ExtensionCommands)) {
    assert.ok(!server.has(id), id);
  }
  assert.ok(GeneratingCommands.includes(ServerCommands.explain));
  assert.ok(!GeneratingCommands.includes(ServerCommands.listConversations));
});

test('a language model request becomes one chat message: the last user turn, earlier turns quoted', () => {
  assert.equal(languageModelPrompt([{ role: 'user', text: ' What is 2+2? ' }]), 'What is 2+2?');
  const prompt = languageModelPrompt([
    { role: 'system', text: 'Be brief.' },
    { role: 'user', text: 'Name a prime.' },
    { role: 'assistant', text: '7' },
    { role: 'user', text: 'Another one?' },
    { role: 'assistant', text: '' },
  ]);
  assert.equal(prompt, 'Earlier in this conversation:\n\nSystem: Be brief.\n\nUser: Name a prime.\n\nAssistant: 7\n\n---\n\nAnother one?');
  assert.equal(languageModelPrompt([{ role: 'assistant', text: 'hi' }]), '');
  assert.equal(languageModelPrompt([]), '');
});
