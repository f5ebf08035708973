// Runs the VS Code scenarios in one real workbench: code-server (installed by install.sh)
// with the freshly built .vsix, driven through Chromium by playwright-core.
//
//   node run.js CONFIG.json
//
// CONFIG (written by tests/editors/test_vscode.py): rig, vsix, root (this run's folder:
// config, user data, extensions), tmp (code-server's TMPDIR, a short path), workspace, results (JSON written after every
// scenario), shots (the screen at the end of each scenario, for a failure to be looked
// at), screenshots (the docs' folder: Explain's answer and ghost text, from passing runs),
// env (for code-server and what it starts), settings (user settings), chromium, timeouts,
// deadline (seconds for all scenarios: those left after it are reported as not run), only
// (optional list of scenario names).
// Everything it starts is stopped by PID before it exits.
'use strict';
const fs = require('fs');
const path = require('path');
const { CodeServer } = require('./lib/codeServer');
const { stopTree, tree } = require('./lib/processes');
const { Workbench } = require('./lib/workbench');
const { scenarios } = require('./scenarios');

const BROWSER_ARGS = [
  '--no-sandbox',
  // No network here but the loopback, and nothing of the browser's own should try.
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-gpu',
  '--disable-quic',
];

/** The screen as it is (CSS animations such as the panel's cursor stopped); a page starved
 * of CPU by a busy machine can take its time. */
const screenshot = (page) => page.screenshot({ animations: 'disabled', timeout: 90000 });

/** Writes a PNG only when it differs. */
function writeIfChanged(file, png) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (!fs.existsSync(file) || !fs.readFileSync(file).equals(png)) fs.writeFileSync(file, png);
}

async function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const results = { scenarios: {}, timings: {} };
  const save = () => fs.writeFileSync(config.results, JSON.stringify(results, null, 2));
  const t0 = Date.now();
  const mark = (name) => (results.timings[name] = (Date.now() - t0) / 1000);
  const kept = [];
  const ctx = {
    env: config.env,
    settings: config.settings,
    timeouts: config.timeouts,
    // Screenshots for the docs are written only by a passing scenario (after the run).
    keepScreenshot: async (page, name) => kept.push({ name, png: await screenshot(page) }),
  };
  const { chromium } = require(path.join(config.rig, 'node_modules', 'playwright-core'));
  const server = new CodeServer({ rig: config.rig, root: config.root, tmp: config.tmp, env: config.env, settings: config.settings });
  let browser;
  try {
    results.installed = server.installExtension(config.vsix);
    const url = await server.start();
    mark('code-server');
    browser = await chromium.launch({ executablePath: config.chromium, args: BROWSER_ARGS, env: config.env, timeout: 60000 });
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    await context.grantPermissions(['clipboard-read', 'clipboard-write']); // settings are pasted
    // Playwright's 30 s per step is short for a workbench on a busy shared machine (seen:
    // the first page load took over 30 s with the cores oversubscribed 8 times).
    context.setDefaultTimeout(90000);
    const page = await context.newPage();
    const wb = new Workbench(page);
    await wb.open(url, config.workspace);
    mark('workbench');
    // The chat view opens on the right by default; StarChat's panel is the subject here.
    await wb.runCommand('View: Hide Secondary Side Bar');
    for (const scenario of scenarios) {
      if (config.only && !config.only.includes(scenario.name)) continue;
      if ((Date.now() - t0) / 1000 > config.deadline) {
        // A machine so busy that the run used up its time: say so for each scenario left,
        // rather than let every one wait out its own timeouts.
        results.scenarios[scenario.name] = { ok: false, error: `not run: the run's ${config.deadline} s were used up` };
        continue;
      }
      const started = Date.now();
      const before = kept.length;
      const result = { ok: false };
      try {
        Object.assign(result, await scenario.run({ wb, ctx, page }));
        result.ok = true;
      } catch (e) {
        result.error = String(e && e.stack ? e.stack : e).slice(0, 3000);
        kept.splice(before);
        await page.keyboard.press('Escape').catch(() => undefined);
      }
      result.seconds = (Date.now() - started) / 1000;
      // The screen at the end of the scenario, in the test's temp dir (the suite keeps it
      // when a test failed).
      result.screenshot = path.join(config.shots, `${scenario.name}.png`);
      await screenshot(page).then((png) => writeIfChanged(result.screenshot, png)).catch((e) => (result.screenshot = `none: ${e.message}`));
      results.scenarios[scenario.name] = result;
      save();
    }
    for (const { name, png } of kept) writeIfChanged(path.join(config.screenshots, name), png);
    results.kept = kept.map((k) => k.name);
    results.log = server.log.slice(-4000);
  } catch (e) {
    results.error = String(e && e.stack ? e.stack : e).slice(0, 3000);
    results.log = server.log.slice(-4000);
  } finally {
    mark('scenarios');
    if (browser) await browser.close().catch(() => undefined);
    await server.stop();
    // Anything else this process started (the browser, should close() have left it).
    const left = tree(process.pid).filter((pid) => pid !== process.pid);
    for (const pid of left) await stopTree(pid, 3000);
    results.leftover = left;
    mark('stopped');
    save();
  }
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
