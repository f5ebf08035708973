// Finding and stopping the processes the rig starts, by PID (Linux /proc).
'use strict';
const fs = require('fs');

/** Parent pid of every live process: Map<pid, ppid>. */
function parents() {
  const map = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] !== 'Z' && fields[0] !== 'X') map.set(Number(name), Number(fields[1]));
    } catch {
      // gone meanwhile
    }
  }
  return map;
}

/** `pid` and all its live descendants. */
function tree(pid) {
  const map = parents();
  const found = [pid];
  for (let i = 0; i < found.length; i++) {
    for (const [child, parent] of map) {
      if (parent === found[i] && !found.includes(child)) found.push(child);
    }
  }
  return found.filter((p) => map.has(p));
}

function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !['Z', 'X'].includes(stat.slice(stat.lastIndexOf(')') + 2)[0]);
  } catch {
    return false;
  }
}

function signal(pid, sig) {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** SIGTERM `pid` and its descendants (listed before the signal), SIGKILL what is left
 * after `graceMs`; resolves once all of them are gone. Returns the pids that needed SIGKILL. */
async function stopTree(pid, graceMs = 5000) {
  const pids = tree(pid);
  for (const p of pids) signal(p, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && pids.some(alive)) await sleep(50);
  const stubborn = pids.filter(alive);
  for (const p of stubborn) signal(p, 'SIGKILL');
  while (stubborn.some(alive)) await sleep(50);
  return stubborn;
}

/** Live processes whose environment holds `name=value` and whose command line matches
 * `pattern`: [{pid, cmd}]. */
function findByEnv(name, value, pattern) {
  const needle = `${name}=${value}`;
  const found = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const env = fs.readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      if (!env.includes(needle)) continue;
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim();
      if (pattern.test(cmd) && alive(Number(entry))) found.push({ pid: Number(entry), cmd });
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

module.exports = { alive, findByEnv, sleep, stopTree, tree };
