# Two entry points on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Prefect's ephemeral API needs far more than its default 20 s to start on 2-core machines.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export PREFECT_HOME ?= $(CURDIR)/.prefect
# No traffic leaves the machine: Prefect's server would otherwise try to send telemetry.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install demo demo-video test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/reelforge run character

# A 30-second animatic on the embedded preview workers, offline (scene cards, speech, music bed, subtitles).
demo-video: $(STAMP)
	$(BIN)/reelforge run video --production demo-animatic --duration 30 --width 640 --height 352 --burn-subtitles \
		--brief "A lighthouse keeper on a stormy island finds a message in a bottle and sets out to answer it"

lint: $(STAMP)
	$(BIN)/ruff check reelforge tasks flows tests bench

typecheck: $(STAMP)
	$(BIN)/mypy reelforge tasks flows

test: lint typecheck
	$(BIN)/pytest -q -rs

bench: $(STAMP)
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) .prefect .pytest_cache .mypy_cache .ruff_cache character-output media-store
