# Every target creates .venv on first use, so a machine with only python3 is enough.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out
STAMP  := $(VENV)/.installed

.PHONY: demo test audit lint dagster bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]' || \
	  $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/imt-etl demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Known vulnerabilities in the installed dependencies (pip-audit; report in audit-report.json).
audit: $(STAMP)
	$(BIN)/python .ci/audit.py --out .

# dagster dev on 127.0.0.1 with the emulator demo; DAGSTER_HOME is .dagster_home/ (telemetry off).
DAGSTER_PORT ?= 3000
dagster: $(STAMP)
	exec $(BIN)/python -m dagster_project.dev --host 127.0.0.1 --port $(DAGSTER_PORT)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(OUT) .pytest_cache audit-report.json
