import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DeltaAssembler, throttle, withNotes } from '../src/deltas';

test('reports concatenate to the reply; begin and end carry no text', () => {
  const a = new DeltaAssembler();
  assert.equal(a.accept({ kind: 'begin', title: 'StarChat', message: 'Generating' }), undefined);
  assert.equal(a.accept({ kind: 'report', message: 'def f' }), 'def f');
  assert.equal(a.accept({ kind: 'report' }), undefined);
  assert.equal(a.accept({ kind: 'report', message: '():\n    return 1' }), '():\n    return 1');
  assert.equal(a.accept({ kind: 'end', message: 'done' }), undefined);
  assert.equal(a.ended, true);
  assert.equal(a.count, 2);
  assert.equal(a.text, 'def f():\n    return 1');
  assert.equal(a.finish('def f():\n    return 1'), 'def f():\n    return 1');
});

test('the final reply wins when a delta went missing', () => {
  const a = new DeltaAssembler();
  a.accept({ kind: 'report', message: 'Hello ' });
  assert.equal(a.finish('Hello world'), 'Hello world');
  assert.equal(a.text, 'Hello world');
});

test('a non-string reply keeps what streamed', () => {
  const a = new DeltaAssembler();
  a.accept({ kind: 'report', message: 'partial' });
  assert.equal(a.finish(undefined), 'partial');
});

test('after close (a cancel) late deltas are dropped but end is still seen', () => {
  const a = new DeltaAssembler();
  a.accept({ kind: 'report', message: 'one' });
  a.close();
  assert.equal(a.accept({ kind: 'report', message: 'two' }), undefined);
  a.accept({ kind: 'end' });
  assert.equal(a.text, 'one');
  assert.equal(a.ended, true);
});

test('throttle runs at most once per interval and flush delivers at once', async () => {
  let calls = 0;
  const t = throttle(() => calls++, 40);
  t();
  t();
  t();
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(calls, 1);
  t();
  t.flush();
  assert.equal(calls, 2);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(calls, 2);
});

test('notes follow the reply outside any code block it was cut off in', () => {
  assert.equal(withNotes('Hello.', []), 'Hello.');
  assert.equal(withNotes('Hello.', ['[stopped]']), 'Hello.\n\n_[stopped]_');
  // Stopped inside a fence: closed before the note (seen in VS Code: the note rendered as code).
  assert.equal(withNotes('Here:\n```python\nx = 1', ['[stopped]']), 'Here:\n```python\nx = 1\n```\n\n_[stopped]_');
  assert.equal(withNotes('~~~~\na\n~~~', ['n']), '~~~~\na\n~~~\n~~~~\n\n_n_');
  // A closed fence stays as it is.
  assert.equal(withNotes('```\nx\n```\nDone.', ['a', 'b']), '```\nx\n```\nDone.\n\n_a_\n\n_b_');
});
