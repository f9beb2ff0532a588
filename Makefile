# Every target creates .venv on first use, so a machine with only python3 is enough.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out
STAMP  := $(VENV)/.installed
# Bytecode written ahead: where PYTHONDONTWRITEBYTECODE is set (as on our CI machines) every
# process would otherwise compile pandas, dagster and fhir.resources from source again
# (imports 10.3 s -> 3.9 s per process, measured). A stale .pyc is simply recompiled in memory.
COMPILE := $(BIN)/python -m compileall -q -j 0
SOURCES := imt_etl dagster_project tests benchmarks

.PHONY: demo test audit lint dagster bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]' || \
	  $(BIN)/python -m pip install --quiet -e '.[dev]'
	$(COMPILE) $(VENV)/lib >/dev/null || echo "some installed files did not byte-compile (harmless)"
	touch $(STAMP)

demo: $(STAMP)
	@$(COMPILE) $(SOURCES) >/dev/null
	$(BIN)/imt-etl demo --out $(OUT)

test: $(STAMP)
	@$(COMPILE) $(SOURCES) >/dev/null
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

# 1,000 (3 repeats) and 10,000 participants (1); see benchmarks/RESULTS.md for the time it takes.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --budget-min 40

clean:
	rm -rf $(OUT) .pytest_cache audit-report.json
