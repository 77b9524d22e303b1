# keel's own entry points. `make bootstrap` once, then `make test` or `make test-fast`.

# uv on PATH, or the one `make bootstrap` installs into .tools/, a virtual environment of keel's
# own: Debian's python3 refuses `pip install` into the system interpreter (PEP 668), and a venv
# needs only python3-venv, never root.
PYTHON ?= python3
TOOLS := $(CURDIR)/.tools
UV ?= $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
# pytest-xdist workers: three on 2 cores. A generated suite waits much of its time (for a worker
# to take a task, a server to restart, a grace period to end), so a third suite uses the cores
# the other two leave idle (35 to 60 minutes for the whole suite with three on 2026-11-30 and
# 2026-12-01, as the VM's speed drifted; docs/matrix.md). worksteal keeps every worker busy to the end, and the longest tests start
# first (tests/conftest.py).
JOBS ?= 3
# keel's own environment keeps its bytecode files, even on a machine that turns them off.
unexport PYTHONDONTWRITEBYTECODE
PYTEST_PARALLEL = -n $(JOBS) --dist worksteal

.PHONY: bootstrap ensure-uv test test-fast demo docs

ensure-uv:
	@PYTHON="$(PYTHON)" TOOLS="$(TOOLS)" bash scripts/ensure-uv

bootstrap: ensure-uv
	$(UV) sync

# Everything: unit, validation, every combination rendered, installed and tested.
test:
	$(UV) run pytest $(PYTEST_PARALLEL)

# About half a minute (28 s last measured): unit, validation and prompt tests, and the smoke
# subset rendered (KEEL_MATRIX=smoke), without installing generated projects (-m 'not slow').
test-fast:
	KEEL_MATRIX=smoke $(UV) run pytest $(PYTEST_PARALLEL) -m 'not slow'

# Render the embedded default into ./demo-service, run its tests and serve a few requests.
demo: bootstrap
	UV="$(UV)" bash scripts/demo

# Write the docs' generated sections (questions, matrix, bad answers, budget) from their sources.
docs:
	$(UV) run python docs/hooks/generated.py
