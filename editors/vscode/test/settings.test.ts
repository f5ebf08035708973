import assert from 'node:assert/strict';
import { test } from 'node:test';
import { documentSelector, serverLaunch, serverSettings } from '../src/settings';

function conf(values: Record<string, unknown>) {
  return { get: <T>(key: string) => values[key] as T | undefined };
}

test('server settings go under the section starchat, empty groups left to the server', () => {
  const s = serverSettings(conf({ model: '/models/mine.gguf', generation: { max_new_tokens: 64 }, context: {}, filetypes: ['python'] }));
  assert.deepEqual(s, { starchat: { model: '/models/mine.gguf', generation: { max_new_tokens: 64 } } });
});

test('inline completion settings reach the server as they are', () => {
  const s = serverSettings(conf({ completion: { maxNewTokens: 32, model: 'tiny.gguf' } }));
  assert.deepEqual(s, { starchat: { completion: { maxNewTokens: 32, model: 'tiny.gguf' } } });
});

test('the default server command is starchat lsp', () => {
  const l = serverLaunch(conf({}), { PATH: '/bin', EMPTY: undefined });
  assert.ok(!('error' in l));
  if (!('error' in l)) {
    assert.equal(l.command, 'starchat');
    assert.deepEqual(l.args, ['lsp']);
    assert.equal(l.env.PATH, '/bin');
    assert.ok(!('EMPTY' in l.env));
  }
});

test('a configured path and env are used', () => {
  const l = serverLaunch(conf({ 'server.command': ['/venv/bin/starchat', 'lsp', '--log-file', '/tmp/x'], 'server.env': { HF_HUB_OFFLINE: 1 } }), {});
  assert.deepEqual(l, { command: '/venv/bin/starchat', args: ['lsp', '--log-file', '/tmp/x'], env: { HF_HUB_OFFLINE: '1' } });
});

test('a bad server command gives one sentence', () => {
  for (const bad of [[], [''], [1, 2], { a: 1 }]) {
    const l = serverLaunch(conf({ 'server.command': bad }));
    assert.ok('error' in l);
    if ('error' in l) {
      assert.match(l.error, /^starchat\.server\.command must be a list of strings/);
    }
  }
});

test('document selector: all files by default, else the given languages', () => {
  assert.deepEqual(documentSelector(conf({})), [{ scheme: 'file' }, { scheme: 'untitled' }]);
  assert.deepEqual(documentSelector(conf({ filetypes: ['python', 'rust'] })), [
    { scheme: 'file', language: 'python' },
    { scheme: 'file', language: 'rust' },
    { scheme: 'untitled', language: 'python' },
    { scheme: 'untitled', language: 'rust' },
  ]);
});

test('the feedback setting reaches the server (VS Code gives starchat.feedback.* as one object)', () => {
  const s = serverSettings(conf({ feedback: { enabled: true, maxMegabytes: 20 } }));
  assert.deepEqual(s, { starchat: { feedback: { enabled: true, maxMegabytes: 20 } } });
});
