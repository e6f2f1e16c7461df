# Switchyard: the two set-up commands are `make demo` (run the whole system) and `make test`.
PY ?= python3
PIP := $(PY) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install redis-server demo test lint typecheck

# torch is installed first and pinned: the CPU build of 2.13.0 lies on the build machines' disk,
# while a looser requirement would pull a multi-GB CUDA build.
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }

demo: install
	switchyard demo

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:
	$(PY) -m mypy

test: install redis-server lint typecheck
	$(PY) -m pytest -q
