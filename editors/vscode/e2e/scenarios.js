// The scenarios, in the order they run in one workbench session (one language server, one
// worker). Each is a user's steps; it returns what the user saw, which the pytest side
// (tests/editors/test_vscode.py) asserts on. A step that never happens throws.
'use strict';
const { userSettings } = require('./lib/codeServer');
const { findByEnv, sleep } = require('./lib/processes');
const { until } = require('./lib/workbench');

const LSP = /starchat\S* lsp|lsp_server/;
const WORKER = /model\.serving\.worker|starchat\S* worker/;

/** The user settings of the run with `generation` changed (all of them: a setting left
 * out would change too, and some ask for a reload). */
function withGeneration(ctx, changes) {
  const generation = { ...ctx.settings['starchat.generation'], ...changes };
  return userSettings({ ...ctx.settings, 'starchat.generation': generation });
}

/** The language server processes of this run (they carry our private runtime dir). */
function servers(ctx) {
  return findByEnv('STARCHAT_RUNTIME_DIR', ctx.env.STARCHAT_RUNTIME_DIR, LSP).filter((p) => !WORKER.test(p.cmd));
}

const scenarios = [
  {
    name: 'ready',
    async run({ wb, ctx }) {
      await wb.waitForStatus(/StarChat: model ready/, ctx.timeouts.model);
      return { status: await wb.statusText(), servers: servers(ctx).map((p) => p.cmd) };
    },
  },
  {
    name: 'explain',
    async run({ wb, ctx, page }) {
      // The panel open and watched first: a first answer that finishes while a new panel
      // is still loading reaches it in one burst, too fast to see growing from outside.
      await wb.showPanel();
      await wb.watchPanel();
      await wb.openFile('area.py');
      await wb.selectLines(4, 6);
      const menuBefore = await wb.panelReplies();
      await wb.contextMenu(['StarChat', 'Explain selection']);
      const reply = await wb.waitForPanelReply(menuBefore, ctx.timeouts.answer);
      await ctx.keepScreenshot(page, 'vscode-explain.png');
      return { ...reply, panel: await wb.panelText() };
    },
  },
  {
    name: 'followup',
    async run({ wb, ctx }) {
      const index = await wb.panelReplies();
      await wb.panelSend('What does it return for a radius of 2?');
      const reply = await wb.waitForPanelReply(index, ctx.timeouts.answer);
      return { ...reply, replies: index + 1 };
    },
  },
  {
    name: 'participant',
    async run({ wb, ctx }) {
      await wb.runCommand('Chat: Open Chat');
      const first = await wb.chatAsk('@starchat What is a Python list?', ctx.timeouts.answer);
      const second = await wb.chatAsk('@starchat How do I add an item to it?', ctx.timeouts.answer);
      await wb.runCommand('View: Hide Secondary Side Bar');
      return { first, second };
    },
  },
  {
    name: 'fix',
    async run({ wb, ctx, page }) {
      await wb.openFile('greet.py');
      const before = await wb.editorText();
      await wb.selectLines(1, 2);
      const index = await wb.panelReplies();
      await wb.contextMenu(['StarChat', 'Fix selection']);
      const reply = await wb.waitForPanelReply(index, ctx.timeouts.answer);
      const after = await until(async () => {
        const text = await wb.editorText();
        return text !== before && text;
      }, 'the fix to change the document', 30000);
      await wb.focusEditor();
      await page.keyboard.press('Control+Z');
      const undone = await until(async () => {
        const text = await wb.editorText();
        return text === before && text;
      }, 'undo to restore the document', 30000).catch(async () => wb.editorText());
      return { before, after, undone, reply: reply.text };
    },
  },
  {
    name: 'ghost',
    async run({ wb, ctx, page }) {
      await wb.openFile('ghost.py');
      await wb.focusEditor();
      await page.keyboard.press('Control+End');
      const typed = '    ret';
      await page.keyboard.type(typed, { delay: 60 });
      // VS Code asks again only when the text changes: if no suggestion came (the server may
      // answer null), type the last letter again, as a user would.
      let asked = Date.now();
      const ghost = await until(async () => {
        const text = await wb.ghostText();
        if (!text && Date.now() - asked > 20000) {
          await page.keyboard.press('Backspace');
          await page.keyboard.type(typed.slice(-1));
          asked = Date.now();
        }
        return text;
      }, 'ghost text', ctx.timeouts.answer, 100);
      const shown = await wb.editorText();
      await ctx.keepScreenshot(page, 'vscode-ghost-text.png');
      await page.keyboard.press('Tab');
      const accepted = await until(async () => {
        const text = await wb.editorText();
        return text !== shown && text;
      }, 'Tab to accept the suggestion', 30000);
      return { typed, ghost, shown, accepted, ghostAfter: await wb.ghostText() };
    },
  },
  {
    name: 'stop',
    async run({ wb, ctx, page }) {
      await wb.editSettings(withGeneration(ctx, { max_new_tokens: 2000 }));
      const index = await wb.panelReplies();
      await wb.panelSend('Write a very long and detailed tutorial about Python classes, with many examples.');
      const reply = wb.panel().locator('.reply').nth(index);
      await until(async () => (await reply.innerText()).length > 200, 'the long answer to stream', ctx.timeouts.answer, 100);
      const atStop = (await reply.innerText()).length;
      await wb.runCommand('StarChat: Stop generating');
      const status = await until(async () => /StarChat: (stopped|nothing to stop)/.exec(await wb.statusText())?.[0], 'the stop message', 10000, 50);
      const finished = await wb.waitForPanelReply(index, 30000);
      // After it finished: does the text still grow?
      const later = [];
      for (let i = 0; i < 6; i++) {
        await sleep(500);
        later.push((await reply.innerText()).length);
      }
      await wb.editSettings(withGeneration(ctx, {}));
      return { atStop, status, text: finished.text, length: finished.text.length, later };
    },
  },
  {
    name: 'restart',
    async run({ wb, ctx }) {
      const workers = findByEnv('STARCHAT_RUNTIME_DIR', ctx.env.STARCHAT_RUNTIME_DIR, WORKER);
      const serversBefore = servers(ctx).map((p) => p.pid);
      for (const w of workers) process.kill(w.pid, 'SIGKILL'); // the fault: the worker dies
      await until(async () => !findByEnv('STARCHAT_RUNTIME_DIR', ctx.env.STARCHAT_RUNTIME_DIR, WORKER).some((p) => workers.some((w) => w.pid === p.pid)), 'the killed worker to be gone', 30000);
      await wb.runCommand('StarChat: Restart language server');
      await wb.waitForStatus(/StarChat: (starting|loading model)/, 30000).catch(() => undefined);
      await wb.waitForStatus(/StarChat: model ready/, ctx.timeouts.model);
      const status = await wb.statusText();
      const serversAfter = servers(ctx).map((p) => p.pid);
      const index = await wb.panelReplies();
      await wb.panelSend('Say hello in one short sentence.');
      const reply = await wb.waitForPanelReply(index, ctx.timeouts.answer);
      const workersAfter = findByEnv('STARCHAT_RUNTIME_DIR', ctx.env.STARCHAT_RUNTIME_DIR, WORKER).map((p) => p.pid);
      return { killed: workers.map((w) => w.pid), serversBefore, serversAfter, workersAfter, status, reply: reply.text };
    },
  },
  {
    name: 'bad_setting',
    async run({ wb, ctx }) {
      await wb.editSettings(withGeneration(ctx, { temperature: 50 }));
      const toasts = await until(async () => {
        const all = await wb.toasts();
        return all.some((t) => /temperature/.test(t)) && all;
      }, 'the warning about the setting', 30000);
      await wb.editSettings(withGeneration(ctx, {}));
      return { toasts };
    },
  },
];

module.exports = { scenarios };
