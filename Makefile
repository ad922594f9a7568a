# Two commands do all set-up on a fresh machine: `make simulate` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
ARGS ?=

.PHONY: simulate test install clean

install: $(VENV)/.installed

# torch first, pinned: the CPU wheel on this disk; an unpinned torch would pull a CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

simulate: install
	$(VENV)/bin/fedfusion simulate $(ARGS)

test: install
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf outputs multirun
