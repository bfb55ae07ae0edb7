# Two commands on a fresh machine (see README):
#   make run    set up, then run the full study on the embedded default server
#   make test   set up, then run the test suite
#
# Setup builds llama-cpp-python from source once per machine with portable CPU flags (the
# default -march=native build dies with SIGILL on some VMs) and caches the wheel under
# ~/.cache/mabench/wheels, and llama.cpp's own server from the same sources under
# ~/.cache/mabench/llama-server-*, so later setups install in seconds.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
STUDY ?= config.yaml

LLAMA_CPP_VERSION := 0.3.36
ifeq ($(shell uname -m),x86_64)
GGML_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
GGML_TAG := portable-avx2
else
GGML_FLAGS := -DGGML_NATIVE=OFF
GGML_TAG := portable-$(shell uname -m)
endif
WHEELHOUSE ?= $(HOME)/.cache/mabench/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(GGML_TAG)
# llama.cpp's own server, built once from the same sdist's llama.cpp (the llama_server backend)
LLAMA_SERVER_CACHE ?= $(HOME)/.cache/mabench/llama-server-$(LLAMA_CPP_VERSION)-$(GGML_TAG)

.PHONY: setup run study test test-cluster lint docs bench report-html clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile envs/build-llama-server.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mabench needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "Using the cached portable llama-cpp-python wheel in $(WHEELHOUSE)"; \
	else \
	  echo "Building llama-cpp-python $(LLAMA_CPP_VERSION) with $(GGML_FLAGS) (about 9 minutes on 2 cores)"; \
	  CMAKE_ARGS="$(GGML_FLAGS)" $(BIN)/python -m pip wheel --no-deps --no-cache-dir \
	    llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELHOUSE); \
	fi
	CMAKE_ARGS="$(GGML_FLAGS)" $(BIN)/python -m pip install --quiet --find-links $(WHEELHOUSE) -e '.[test,bench,cluster]'
	envs/build-llama-server.sh $(LLAMA_CPP_VERSION) $(LLAMA_SERVER_CACHE) $(BIN)/python "$(GGML_FLAGS)"
	ln -sf $(LLAMA_SERVER_CACHE)/llama-server $(BIN)/llama-server
	$(BIN)/mabench doctor
	@touch $@

# The main job: the full study (config.yaml), or another one with STUDY=workflow/studies/<x>.yaml
run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile $(STUDY)

test: setup
	$(BIN)/python -m pytest

# The smoke study on a real single-node Slurm (Debian's packages; root), brought up and torn
# down by tests/cluster/slurm.sh. Without root or apt: a SKIPPED line, exit 0.
test-cluster: setup
	tests/cluster/run.sh

# Style: ruff (lint and format), the layering of src/mabench as contracts ([tool.importlinter] in
# pyproject.toml), snakefmt, Snakemake's own linter (CI runs it after the tests)
lint: setup
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint --configfile config.yaml

# The table schemas in docs/outputs.md and the run record's JSON schema, regenerated from the code
docs: setup
	$(BIN)/python -m mabench.analysis.schema_docs docs/outputs.md
	$(BIN)/python -m mabench.measure.schema_file

bench: setup
	$(BIN)/python -m benchmarks

report-html: setup
	$(BIN)/snakemake --configfile $(STUDY) --report report.html

clean:
	rm -rf $(VENV) .snakemake
