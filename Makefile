# charrnn: every command a user or CI needs. The venv is built from requirements.lock (exact pins).
VENV    ?= .venv
PY      := $(VENV)/bin/python
DVC     := $(VENV)/bin/dvc
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000

.PHONY: install install-team run test test-fast repro-check ui clean-venv bench bench-quick bench-data-1gb bench-data-10gb bench-quality bench-stateful

$(STAMP): requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check pip==26.3
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

## install-team: install, plus the team's extras (S3 and SSH remotes, MLflow on PostgreSQL), pinned on top of the base lock
install-team: install
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -r requirements-team.lock

## run: install, then the whole pipeline (`dvc repro`) on the default corpus
run: install
	$(DVC) repro
	@$(PY) -m charrnn.cli outputs

## test: install, then the whole test suite (unit + end-to-end pipeline)
test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

## test-fast: unit tests only (no DVC pipeline runs)
test-fast: install
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

## repro-check: run the pipeline twice from nothing (tiny config) and compare every output hash
repro-check: install
	$(PY) -m charrnn.reprocheck

## ui: the MLflow UI on the project's store, on 127.0.0.1:5000 (UI_HOST=..., UI_PORT=... to change)
ui: install
	@echo "charrnn's runs view: the link \`.venv/bin/charrnn runs\` prints (README: Comparing runs)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host $(UI_HOST) --port $(UI_PORT)

clean-venv:
	rm -rf $(VENV)

## bench: charrnn against the tutorial's approach (bench/reference.py), tables with ratios (~15 min)
bench: install
	$(PY) bench/run.py | tee bench/last-run.md

## bench-quick: the small configuration only, fewer steps (a few minutes)
bench-quick: install
	$(PY) bench/run.py --quick | tee bench/last-run-quick.md

## bench-data-1gb: the three data stages on 1 GB of generated text: MB/s, peak memory, records/text size (~1 min)
bench-data-1gb: install
	$(PY) bench/run.py --only data --data-mb 1024 | tee bench/last-run-data-1gb.md

## bench-data-10gb: the same on 10 GB (~5 min; needs ~30 GB free under the temp folder while it runs)
bench-data-10gb: install
	$(PY) bench/run.py --only data --data-mb 10240 | tee bench/last-run-data-10gb.md

## bench-quality: the CPU quality ablation, one `dvc exp run -S ...` per recipe change on tiny shakespeare, 3 seeds each (2-3.5 h, see BENCHMARKS.md; --rows/--seeds for a subset)
bench-quality: install
	$(PY) bench/quality.py | tee bench/last-run-quality.md

## bench-stateful: stateful (TBPTT) training against shuffled windows, same model and steps (~25 min)
bench-stateful: install
	$(PY) bench/stateful.py | tee bench/last-run-stateful.md
