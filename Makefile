# The two commands of the README, and the benchmark. Each sets itself up:
# a virtualenv in .venv with fifoflow installed in editable mode.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench lint clean check-tools

demo: $(VENV)/.ready check-tools
	$(BIN)/fifoflow run flows/examples/hello/flow.json --input '{"name": "world"}'

test: $(VENV)/.ready-test check-tools
	$(BIN)/python -m tests.setup_machine
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(VENV)/.ready-test check-tools
	$(BIN)/python -m tests.bench

lint: $(VENV)/.ready-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check-tools:
	@command -v node >/dev/null || { echo "fifoflow needs Node.js >= 20 for the node runtime (Debian: apt-get install nodejs)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "fifoflow needs Python >= 3.11"; exit 1; }
	@command -v go >/dev/null || echo "note: no Go toolchain: the go runtime is not offered (Debian: apt-get install golang-go; make test installs it)"

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.ready-test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.ready

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
