# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_PORT ?= 3000

.PHONY: install browser demo test lint typecheck pytest bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The Workbench page: built from workbench/ with npm into the package (git-ignored, shipped in the wheel).
# The pip install above builds it when it is missing (hatch_build.py); this rebuilds it after a change.
WORKBENCH := src/stepline/_workbench_static/index.html
$(WORKBENCH): workbench/package.json workbench/package-lock.json workbench/vite.config.ts workbench/index.html $(wildcard workbench/src/*)
	cd workbench && npm ci --no-audit --no-fund --loglevel=error && npx vite build --logLevel warn

# The Workbench's browser tests drive Debian's Chromium (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium >/dev/null)

install: $(BIN)/.installed $(WORKBENCH)

demo: install
	@echo "Starting the financial-report example: http://127.0.0.1:$(DEMO_PORT)  (Ctrl-C stops it)"
	@echo "The Workbench: http://127.0.0.1:$(DEMO_PORT)/__workbench/"
	$(BIN)/stepline dev --dir examples/financial-report --port $(DEMO_PORT)

lint: install
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

pytest: install browser
	$(BIN)/pytest

test: lint typecheck pytest

# The side-by-side suite (docs/benchmarks.md), about an hour on 2 cores. Motia runs a process per
# step call, well under 1 chain/s here (and slower as its Redis fills): 50 chains keep its three runs to
# minutes, not hours. `bench/chain.py` is the quick Stepline-only bench.
bench: install
	$(BIN)/python bench/run.py --chains-for motia=50 --chains-for motia-python=50

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache workbench/node_modules src/stepline/_workbench_static
