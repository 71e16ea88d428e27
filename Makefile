# beit_nb: the README's commands. Each creates .venv and installs the package (with its dev extras) if missing.
SHELL := /bin/bash
PY    ?= python3.11
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: demo experiments test lab install check-export browser hf4 scipy113 clean-venv

install: $(STAMP)

# The stamp's name carries a hash of pyproject.toml's content, so a changed pyproject.toml reinstalls and nothing else
# does (nbdev-export rewrites pyproject.toml's mtime on every run, which must not cost a reinstall).
$(STAMP):
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

# transformers 4.x beside the venv's 5.x, for tests/test_checkpoint_hf4.py (transformers 4.x reading our 4.x export).
# It cannot share the venv with 5.x, so it goes into its own folder that only that test puts on PYTHONPATH.
HF4 := $(VENV)/hf4
hf4: $(HF4)/.ok
$(HF4)/.ok: | $(STAMP)
	@rm -rf $(HF4); $(BIN)/python -m pip install -q --no-deps --target $(HF4) "transformers==4.57.*" "tokenizers==0.22.*" "huggingface_hub<1.0" \
	  && touch $@ || echo "warning: could not install transformers 4.x; tests/test_checkpoint_hf4.py will be skipped"

# SciPy 1.13 (the last with `interp2d`) beside the venv's SciPy, for tests/test_checkpoint_interp2d.py: the official
# code's cubic resize of the relative position bias table, run as the official code runs it. Its own NumPy 2.2 comes
# along (SciPy 1.13 supports NumPy < 2.3); only that test's subprocess puts the folder on PYTHONPATH.
SCIPY113 := $(VENV)/scipy113
scipy113: $(SCIPY113)/.ok
$(SCIPY113)/.ok: | $(STAMP)
	@rm -rf $(SCIPY113); $(BIN)/python -m pip install -q --no-deps --target $(SCIPY113) "scipy==1.13.*" "numpy==2.2.*" \
	  && touch $@ || echo "warning: could not install SciPy 1.13; tests/test_checkpoint_interp2d.py will be skipped"

# nbdev discipline: exporting and cleaning the notebooks must not change the committed tree.
check-export: install
	@before=$$(git status --porcelain); \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean; \
	after=$$(git status --porcelain); \
	if [ "$$before" != "$$after" ]; then echo "nbdev-export/nbdev-clean changed the tree:"; git status --short; exit 1; fi; \
	echo "nbdev-export and nbdev-clean leave the tree unchanged"

test: install browser hf4 scipy113 check-export
	@if [ -f $(HF4)/.ok ]; then export BEIT_NB_HF4=$(abspath $(HF4)); fi; \
	if [ -f $(SCIPY113)/.ok ]; then export BEIT_NB_SCIPY113=$(abspath $(SCIPY113)); fi; $(BIN)/python tools/run_tests.py

demo: install
	$(BIN)/beit-demo --run-dir runs/demo $(ARGS)

# The small-scale reproduction of nbs/06c_experiments.ipynb (slow: hours on 2 CPU cores, see 06c's Results for the
# measured time; not part of `make test`). `make experiments ARGS='--preset quick'` runs every stage in minutes.
# Cached stage by stage in runs/experiments: rerunning resumes, and adds seeds or arms given in ARGS.
experiments: install
	$(BIN)/beit-experiments --preset paper --jobs 2 --run-dir runs/experiments $(ARGS)

# JupyterLab on nbs/, on this machine only (127.0.0.1; PORT busy → the next free one), no browser opened: open the
# printed http://127.0.0.1:PORT/lab?token=... URL. The token is a fresh random one each start (Jupyter's default), so
# no other local user or web page can drive the kernel; `make lab ARGS=...` adds or overrides Jupyter options.
# The kernel is the venv's: the notebooks ask for `python3`, the venv's own kernelspec comes first on Jupyter's path
# (JUPYTER_PREFER_ENV_PATH), and Jupyter starts it with the interpreter Lab runs on, .venv/bin/python; ipywidgets'
# JupyterLab extension (jupyterlab_widgets) comes with ipywidgets. As root (containers, CI machines) it adds --allow-root,
# which Jupyter otherwise refuses. tests/test_lab_browser.py runs this recipe's line.
PORT ?= 8888
lab: install
	JUPYTER_PREFER_ENV_PATH=1 $(BIN)/jupyter lab --no-browser --ServerApp.ip=127.0.0.1 --port=$(PORT) --notebook-dir=nbs \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

clean-venv:
	rm -rf $(VENV)
