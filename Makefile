# beit_nb: the README's two commands. Each creates .venv and installs the package (with its dev extras) if missing.
SHELL := /bin/bash
PY    ?= python3.11
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: demo test install check-export browser clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { command -v $(PY) >/dev/null && $(PY) -m venv $(VENV) || python3 -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision first, at the versions this machine holds on disk (a plain `torch` resolves to them too)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

# Headless Chromium for the browser tests (Debian's package; Playwright never downloads a browser here).
browser:
	@test -x /usr/bin/chromium || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will be skipped"; }

# nbdev discipline: exporting and cleaning the notebooks must not change the committed tree.
check-export: install
	@before=$$(git status --porcelain); \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean; \
	after=$$(git status --porcelain); \
	if [ "$$before" != "$$after" ]; then echo "nbdev-export/nbdev-clean changed the tree:"; git status --short; exit 1; fi; \
	echo "nbdev-export and nbdev-clean leave the tree unchanged"

test: install browser check-export
	$(BIN)/python tools/run_tests.py

demo: install
	$(BIN)/beit-demo --out runs/demo $(ARGS)

clean-venv:
	rm -rf $(VENV)
