// Page objects for the parts of the VS Code workbench the scenarios use, driven the way a
// user drives them (keyboard, mouse, what is on the screen). Selectors live here only.
'use strict';

const S = {
  workbench: '.monaco-workbench',
  statusBar: '#workbench\\.parts\\.statusbar',
  quickInput: '.quick-input-widget',
  quickInputBox: '.quick-input-widget input',
  quickInputRows: '.quick-input-widget .monaco-list-row',
  activeEditor: '.editor-group-container.active .monaco-editor',
  activeTab: '.editor-group-container.active .tab.active',
  viewLines: '.view-lines',
  viewLine: '.view-lines .view-line',
  ghostText: '.ghost-text-decoration, .ghost-text',
  selection: '.selected-text',
  menuItem: '.monaco-menu .action-label',
  toast: '.notifications-toasts .notification-list-item-message',
  // The chat panel is a webview: an iframe holding the page in an inner iframe.
  panelFrame: 'iframe.webview',
  panelInner: '#active-frame',
  panelLog: '#log',
  panelReply: '.reply',
  panelInput: '#msg',
  // VS Code's own chat view (where `@starchat` answers).
  chatInput: '.interactive-input-part .monaco-editor',
  chatRow: '.interactive-list .monaco-list-row',
  chatItem: '.interactive-item-container',
  chatMarkdown: '.rendered-markdown',
  chatResponseLoading: '.interactive-item-container.interactive-response.chat-response-loading',
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** How long one UI step (a palette row, a menu item, a file in quick open) may take to
 * appear: seconds on a quiet machine, far more on a busy shared one. */
const STEP_MS = 60000;

/** Polls `probe` until it returns a truthy value; throws `what` after `timeoutMs`. */
async function until(probe, what, timeoutMs = 60000, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
}

/** Text as the user reads it: non-breaking spaces (Monaco's rendering) as spaces. */
const plain = (text) => (text || '').replace(/\u00a0/g, ' ');

class Workbench {
  constructor(page) {
    this.page = page;
  }

  async open(url, folder) {
    // Not the load event: the workbench is usable before every last resource has come (the
    // first load is seconds quiet on a busy machine, past playwright's 30 s default).
    await this.page.goto(`${url}/?folder=${encodeURIComponent(folder)}`, { waitUntil: 'domcontentloaded', timeout: 180000 });
    await this.page.waitForSelector(S.workbench, { timeout: 180000 });
  }

  // --- command palette and quick open -------------------------------------------------

  /** Runs a command by its palette title (F1, type, click the row with exactly that title).
   * With `asks`, the command asks for input: resolves once its input box is there. */
  async runCommand(title, { asks = false } = {}) {
    // The row labelled exactly the title ("TITLE" or "TITLE, KEYBINDING, …"), not a longer
    // command that starts with it.
    const label = title.replace(/"/g, '\\"');
    const rows = `${S.quickInputRows}[aria-label="${label}"], ${S.quickInputRows}[aria-label^="${label}, "]`;
    for (let attempt = 1; ; attempt++) {
      await this.page.keyboard.press('F1');
      const box = this.page.locator(S.quickInputBox);
      // Typing before the palette has put its '>' in can be overwritten by it.
      await until(async () => (await box.isVisible()) && (await box.inputValue()).startsWith('>'), 'the command palette', STEP_MS);
      await box.fill(`>${title}`);
      const row = this.page.locator(rows).first();
      try {
        await row.waitFor({ timeout: STEP_MS });
      } catch (e) {
        await this.page.keyboard.press('Escape');
        if (attempt === 3) throw new Error(`no command "${title}" in the palette: ${e.message}`);
        continue;
      }
      await row.click();
      if (asks) {
        await until(async () => !(await box.inputValue()).startsWith('>'), `the input box of "${title}"`, STEP_MS);
      } else {
        await this.page.locator(S.quickInput).waitFor({ state: 'hidden', timeout: STEP_MS });
      }
      return;
    }
  }

  /** Opens a workspace file by name (Ctrl+P) in the first editor group (the StarChat
   * panel opens beside it; a file opened in the panel's group would cover the panel). */
  async openFile(name) {
    await this.runCommand('View: Focus First Editor Group');
    await this.page.keyboard.press('Control+P');
    await this.page.waitForSelector(S.quickInputBox);
    await this.page.locator(S.quickInputBox).fill(name);
    const row = this.page.locator(S.quickInputRows).filter({ hasText: name }).first();
    await row.waitFor({ timeout: STEP_MS });
    await this.page.keyboard.press('Enter');
    await until(async () => (await this.activeTab()) === name, `the editor of ${name}`);
    await this.editorLines().first().waitFor();
  }

  /** The title of the active editor's tab. */
  async activeTab() {
    const tab = this.page.locator(S.activeTab);
    return (await tab.count()) ? (await tab.first().getAttribute('data-resource-name')) || '' : '';
  }

  // --- status bar and notifications ---------------------------------------------------

  async statusText() {
    return plain(await this.page.locator(S.statusBar).innerText());
  }

  async waitForStatus(pattern, timeoutMs) {
    return until(async () => pattern.test(await this.statusText()), `the status bar to show ${pattern}`, timeoutMs, 250);
  }

  async toasts() {
    return (await this.page.locator(S.toast).allInnerTexts()).map(plain);
  }

  // --- the active text editor ---------------------------------------------------------

  editorLines() {
    return this.page.locator(`${S.activeEditor} ${S.viewLine}`);
  }

  /** The visible lines of the active editor, top to bottom (empty lines included). */
  async editorText() {
    // Monaco draws lines over a few frames: read until two reads agree.
    const read = async () => plain((await this.page.locator(`${S.activeEditor} ${S.viewLine}`).evaluateAll((els) =>
      els.map((e) => {
        const line = e.cloneNode(true); // without ghost text, which is not in the document
        line.querySelectorAll('[class*="ghost-text"]').forEach((g) => g.remove());
        return { top: parseFloat(e.style.top) || 0, text: line.textContent };
      }).sort((a, b) => a.top - b.top).map((l) => l.text))).join('\n'));
    let last = await read();
    return until(async () => {
      await sleep(150);
      const now = await read();
      const same = now === last;
      last = now;
      return same ? { text: now } : undefined;
    }, 'the editor to settle', 10000, 0).then((r) => r.text);
  }

  async focusEditor() {
    await this.editorLines().first().click();
  }

  /** Selects lines first..last (1-based, whole lines) with the keyboard. */
  async selectLines(first, last) {
    await this.focusEditor();
    await this.page.keyboard.press('Control+Home');
    for (let i = 1; i < first; i++) await this.page.keyboard.press('ArrowDown');
    await this.page.keyboard.press('Home');
    for (let i = first; i <= last; i++) await this.page.keyboard.press('Shift+ArrowDown');
  }

  /** Right-click in the selection, then the menu path, e.g. ['StarChat', 'Explain selection']. */
  async contextMenu(path) {
    // The selection is drawn under the text layer: right-click at its place on the screen.
    // (One piece per line, in no set DOM order, redrawn when the editor changes, e.g. when a
    // lightbulb appears: a piece found may be gone a moment later, so ask until one is seen.)
    const pieces = this.page.locator(`${S.activeEditor} ${S.selection}`);
    const box = await until(async () => {
      for (const piece of await pieces.all()) {
        const b = await piece.boundingBox().catch(() => null);
        if (b && b.width > 0 && b.height > 0) return b;
      }
      return null;
    }, 'the selection on the screen', STEP_MS);
    await this.page.mouse.click(box.x + Math.min(20, box.width / 2), box.y + box.height / 2, { button: 'right' });
    for (const label of path) {
      const item = this.page.locator(S.menuItem).filter({ hasText: new RegExp(`^${label}$`) }).last();
      await item.waitFor({ timeout: STEP_MS });
      await item.hover();
      await item.click();
    }
  }

  async ghostText() {
    return plain((await this.page.locator(`${S.activeEditor} ${S.ghostText}`).allInnerTexts()).join(''));
  }

  // --- user settings --------------------------------------------------------------------

  /** Replaces the user settings as a user does: settings.json in the editor, paste, save.
   * (code-server does not pick up a settings file written behind its back.) */
  async editSettings(settings) {
    await this.runCommand('Preferences: Open User Settings (JSON)');
    await until(async () => (await this.activeTab()) === 'settings.json', 'settings.json');
    await this.page.evaluate((text) => navigator.clipboard.writeText(text), JSON.stringify(settings, null, 2));
    await this.focusEditor();
    await this.page.keyboard.press('Control+A');
    await this.page.keyboard.press('Control+V');
    await this.page.keyboard.press('Control+S');
    await until(async () => !(await this.page.locator('.editor-group-container.active .tab.active.dirty').count()), 'settings.json to be saved');
    await this.runCommand('View: Close Editor');
  }

  // --- StarChat's chat panel (a webview) ----------------------------------------------

  panel() {
    return this.page.frameLocator(S.panelFrame).frameLocator(S.panelInner);
  }

  async panelReplies() {
    return (await this.panel().locator(S.panelReply).all().catch(() => [])).length;
  }

  /** Opens the StarChat panel (if it is not open) the way a user does: the Chat command
   * with no message. */
  async showPanel() {
    if (!(await this.page.locator(S.panelFrame).first().isVisible().catch(() => false))) {
      await this.runCommand('StarChat: Chat', { asks: true }); // without a message it shows the panel
      await this.page.keyboard.press('Escape');
      await this.page.locator(S.panelFrame).first().waitFor({ timeout: STEP_MS });
    }
    await this.panel().locator(S.panelLog).waitFor({ state: 'attached', timeout: STEP_MS });
  }

  /** Records, inside the open panel, every length each reply is rendered at (a
   * MutationObserver sees each update the page applies, however fast they come, where
   * polling from here sees only some). */
  async watchPanel() {
    await this.panel().locator(S.panelLog).evaluate((log) => {
      const seen = (window.__starchatLengths = {});
      new MutationObserver(() => {
        for (const r of log.querySelectorAll('.reply')) {
          const list = (seen[r.id] = seen[r.id] || []);
          const n = r.innerText.length;
          if (n && list[list.length - 1] !== n) list.push(n);
        }
      }).observe(log, { childList: true, subtree: true, characterData: true });
    });
  }

  /** Waits for reply number `index` (0-based) to finish; returns its text and every
   * length it was seen at while streaming (the panel's own record after watchPanel(),
   * else what polling saw). */
  async waitForPanelReply(index, timeoutMs = 180000) {
    const reply = this.panel().locator(S.panelReply).nth(index);
    await reply.waitFor({ timeout: 30000 });
    const polled = [];
    await until(async () => {
      const text = await reply.innerText();
      if (text.length && polled[polled.length - 1] !== text.length) polled.push(text.length);
      return !(await reply.getAttribute('class')).includes('pending');
    }, `reply ${index + 1} in the StarChat panel to finish`, timeoutMs, 100);
    const recorded = await reply.evaluate((el) => (window.__starchatLengths || {})[el.id] || null);
    return { text: plain(await reply.innerText()), lengths: recorded || polled, recorded: !!recorded };
  }

  async panelText() {
    return plain(await this.panel().locator(S.panelLog).innerText());
  }

  async panelSend(message) {
    await this.showPanel();
    const input = this.panel().locator(S.panelInput);
    await input.fill(message);
    await input.press('Control+Enter');
  }

  // --- VS Code's chat view --------------------------------------------------------------

  /** Sends a message in the chat view; resolves to the text of its response once done. */
  async chatAsk(message, timeoutMs = 180000) {
    const input = this.page.locator(S.chatInput).first();
    // (Long messages wrap: compare without the line breaks.)
    const flat = (text) => plain(text).replace(/\s+/g, ' ').trim();
    const inputText = async () => flat(await input.locator(S.viewLines).innerText());
    for (let attempt = 1; ; attempt++) {
      await input.click();
      await this.page.keyboard.press('Control+A');
      await this.page.keyboard.press('Backspace');
      // Typed key by key, '@' opens a list of participants that a fast typist's keys can
      // pick from (seen under load: '@agent'); the text is pasted in as a whole instead.
      await this.page.keyboard.insertText(message);
      await this.page.keyboard.press('Escape'); // closes a suggestion list, if one opened
      if (await until(async () => (await inputText()) === message, 'the message in the chat input', 3000).catch(() => false)) break;
      if (attempt === 3) throw new Error(`the chat input holds "${await inputText()}", not "${message}"`);
    }
    await this.page.keyboard.press('Enter');
    // The list is virtual: only rows on screen are in the DOM, in any order; each has its
    // index. The answer is the last row, right after the request that holds the message.
    const question = flat(message.replace(/^@\S+\s*/, ''));
    const lastTwo = () => this.page.locator(S.chatRow).evaluateAll((rows, sel) => rows
      .map((r) => ({ index: Number(r.dataset.index), item: r.querySelector(sel) }))
      .filter((r) => r.item)
      .sort((a, b) => a.index - b.index)
      .slice(-2)
      .map((r) => ({ index: r.index, response: r.item.classList.contains('interactive-response'), text: r.item.innerText })), S.chatItem);
    const answerIndex = await until(async () => {
      const rows = await lastTwo();
      const ok = rows.length === 2 && rows[1].response && rows[1].index === rows[0].index + 1 && flat(rows[0].text).includes(question);
      return ok && rows[1].index + 1;
    }, 'the response to the message in the chat view', 30000);
    await until(async () => !(await this.page.locator(S.chatResponseLoading).count()), 'the chat view to finish its response', timeoutMs, 200);
    const row = this.page.locator(`${S.chatRow}[data-index="${answerIndex - 1}"] ${S.chatMarkdown}`);
    return plain((await row.allInnerTexts()).join('\n'));
  }
}

module.exports = { S, Workbench, plain, sleep, until };
