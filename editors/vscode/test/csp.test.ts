import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chatPanelCsp } from '../src/csp';

const SOURCE = 'https://file+.vscode-resource.vscode-cdn.net';

function directives(csp: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const part of csp.split(';').map((p) => p.trim()).filter(Boolean)) {
    const [name, ...values] = part.split(/\s+/);
    out.set(name, values);
  }
  return out;
}

test('the chat panel fetches nothing remote: no https:, http:, * or other hosts in any directive', () => {
  const d = directives(chatPanelCsp(SOURCE, 'abc123'));
  assert.deepEqual(d.get('default-src'), ["'none'"]);
  assert.deepEqual(d.get('img-src'), [SOURCE, 'data:']);
  for (const [name, values] of d) {
    for (const value of values) {
      assert.ok(!['https:', 'http:', '*', 'ws:', 'wss:'].includes(value), `${name} allows ${value}`);
      assert.ok(value === SOURCE || !/^[a-z]+:\/\//.test(value), `${name} allows the host ${value}`);
    }
  }
  for (const fetching of ['connect-src', 'font-src', 'frame-src', 'media-src', 'object-src']) {
    assert.equal(d.has(fetching), false, `${fetching} falls back to default-src 'none'`);
  }
  assert.deepEqual(d.get('script-src'), ["'nonce-abc123'"]);
});
