# airflow-dataflow: `make demo` runs the example routes, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Everything runs against a project-local Airflow home with an embedded SQLite database.
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
# The demo warehouse: an Airflow connection given as an environment variable.
export AIRFLOW_CONN_DATAFLOW_DEMO ?= sqlite:///$(CURDIR)/out/demo/warehouse.db

.PHONY: install demo test test-e2e openapi lint format airflow bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	@mkdir -p out/demo
	$(BIN)/airflow-dataflow validate dags
	$(BIN)/airflow-dataflow run dags/orders.route.yaml
	$(BIN)/airflow-dataflow run dags/eu_report.route.yaml
	@echo
	@echo "Output is in $(CURDIR)/out/demo:"
	@find out/demo -type f | sort | sed 's/^/  /'
	@echo "Open the Airflow UI with the same routes: make airflow (then http://localhost:8080)"

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

test-e2e: install
	$(BIN)/pytest -m e2e

openapi: install
	$(BIN)/python -c 'from airflow_dataflow.plugins.app import write_openapi; write_openapi()'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

airflow: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/airflow standalone

bench: install
	$(BIN)/python bench/parse.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/destinations.py

clean:
	rm -rf out .airflow .pytest_cache .ruff_cache
