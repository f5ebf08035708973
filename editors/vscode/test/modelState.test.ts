import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LOADING_PROGRESS_TITLE, ModelStateTracker, statusText } from '../src/modelState';

test('the loading progress ends in ready, with the engine kept for the status bar', () => {
  const t = new ModelStateTracker();
  assert.equal(t.state.phase, 'starting');
  assert.ok(t.progress('tok', { kind: 'begin', title: LOADING_PROGRESS_TITLE, message: 'default' }));
  assert.deepEqual(t.state, { phase: 'loading', detail: 'default' });
  assert.ok(t.progress('tok', { kind: 'report', message: 'Loading model (2 s)' }));
  assert.equal(t.state.phase, 'loading');
  assert.ok(t.progress('tok', { kind: 'end', message: 'Model ready (llama.cpp)' }));
  assert.deepEqual(t.state, { phase: 'ready', detail: 'llama.cpp' });
  assert.equal(statusText(t.state, 'default').text, '$(check) StarChat: model ready');
  assert.match(statusText(t.state, 'default').tooltip, /default ready on llama\.cpp/);
});

test('a failed load says so; other progress (streamed answers) changes nothing', () => {
  const t = new ModelStateTracker();
  assert.equal(t.progress('answer', { kind: 'begin', title: 'StarChat: Explain' }), false);
  assert.equal(t.progress('answer', { kind: 'report', message: 'Hello' }), false);
  assert.equal(t.progress('answer', { kind: 'end', message: 'Model ready' }), false);
  assert.equal(t.state.phase, 'starting');
  t.progress(7, { kind: 'begin', title: LOADING_PROGRESS_TITLE });
  t.progress(7, { kind: 'end', message: 'Model failed' });
  assert.equal(t.state.phase, 'failed');
  assert.match(statusText(t.state, 'x.gguf').text, /model failed/);
});

test('a stopped server and a restart reset the state', () => {
  const t = new ModelStateTracker();
  t.progress('a', { kind: 'begin', title: LOADING_PROGRESS_TITLE });
  t.stopped();
  assert.equal(t.state.phase, 'stopped');
  assert.match(statusText(t.state, 'default').tooltip, /Restart language server/);
  // The old token's end, arriving late, must not claim the new server's model is ready.
  assert.equal(t.progress('a', { kind: 'end', message: 'Model ready (llama.cpp)' }), false);
  t.starting();
  assert.equal(t.state.phase, 'starting');
});
