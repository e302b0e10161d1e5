# Every command the README names. `make setup` is implied by the others: a fresh machine needs only these.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU wheel of torch is installed first so that nothing pulls a multi-GB CUDA build on a CPU machine.
# PyPI's Linux torch 2.13.0 is the CUDA build; PyTorch's CPU index publishes 2.13.0+cpu, which pip takes
# for `torch==2.13.0` (the local label is ignored when matching, and 2.13.0+cpu sorts above 2.13.0:
# PEP 440), so one spec serves every machine: a fresh Linux machine gets the CPU wheel from that index, a
# Mac the plain wheel (CPU/MPS), and a machine whose pip already finds 2.13.0+cpu (a wheel directory)
# keeps using it when the index is unreachable (2 retries, not pip's 5: those cost 78 s against 8 s
# where the index's host does not resolve). A CUDA build for `make bench-gpu`:
# make setup TORCH_INDEX=https://download.pytorch.org/whl/cu130 (its 2.13.0+cu130 sorts above too).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STACK ?= dev
HOST ?= 127.0.0.1
PORT ?= 8000
# checkov pins an old `packaging`, so it lives in its own virtualenv (see "Verification gate" in the README).
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

# jemalloc for the server where it is installed (Debian/Ubuntu: apt-get install libjemalloc2), as the image
# preloads it (Dockerfile): under steady load glibc's malloc keeps growing (make bench-hostile, soak).
JEMALLOC ?= $(firstword $(wildcard /usr/local/lib/libjemalloc.so /usr/lib/*-linux-gnu/libjemalloc.so.2))
PRELOAD := $(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC))

.PHONY: setup serve test lint fmt synth synth-all-options charts bench bench-gpu bench-hostile check checkov system-tools

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --retries 2 --extra-index-url '$(TORCH_INDEX)' '$(TORCH_SPEC)'
	$(BIN)/pip install -q -e '.[serve,minilm,infra,dev]'
	touch $@

serve: $(STAMP)
	$(PRELOAD) $(BIN)/python -m service --host $(HOST) --port $(PORT)

test: $(STAMP) $(CHECKOV_STAMP) system-tools
	$(BIN)/pytest
	$(MAKE) lint
	$(MAKE) check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

synth: $(STAMP)
	$(BIN)/python -m rehearsal.synth $(STACK) --out build/synth/$(STACK)

# The same stack with every optional feature switched on (rehearsal/overlay.py, generated from the key
# declarations in infra/keys.py) -> build/synth/$(STACK)-all-options.
synth-all-options: $(STAMP)
	$(BIN)/python -m rehearsal.synth $(STACK) --all-options --out build/synth/$(STACK)-all-options

# The chart archives vendored in charts/ (what `pulumi up` installs and the rehearsal renders) against
# infra/versions.py and against what the upstream chart repositories publish; fetches an archive a bump
# added to the table. Offline it checks the vendored files only (rehearsal/chartsync.py).
charts: $(STAMP)
	$(BIN)/python -m rehearsal.chartsync

# The server vs its in-process limit vs the naive design (bundled MiniLM, short sentences, 1-256 clients),
# then the mixed corpus at 64 clients, the serving overhead (tiny model vs the framework floor) and the
# fairness probe: report, table and plot in bench/results/<machine>/ (bench/NOTES.md).
# Extra flags: BENCH_ARGS='--encoding-format base64' (python -m bench --help).
bench: $(STAMP)
	$(PRELOAD) $(BIN)/python -m bench $(BENCH_ARGS)

# The server under hostile traffic (bench/hostile/): a 10-minute soak per allocator (glibc, and jemalloc where
# installed), slowloris/silent connections and a flood past the connection limit, oversized headers, the stall
# behind a huge input, 413 closing; ~30 min on 2 cores. Report in bench/results/<machine>/hostile.md.
# Shorter: BENCH_ARGS='--soak-minutes 2'; one scenario: BENCH_ARGS='--scenarios headers'.
bench-hostile: $(STAMP)
	$(BIN)/python -m bench --hostile $(BENCH_ARGS)

# tokens/s and MFU of the gte-large-zh architecture on a CUDA GPU (needs a CUDA build of torch: TORCH_INDEX).
bench-gpu: $(STAMP)
	$(BIN)/python -m bench --gpu $(BENCH_ARGS)

# The pre-deploy gate: rehearses both stacks offline (every chart object included), as committed and with
# every optional feature on, then schema, chart values, security, lint, rule, dashboard, policy and
# workflow checks on all four renders (python -m checks; README "Verification gate and CI/CD").
check: $(STAMP) $(CHECKOV_STAMP) system-tools
	$(MAKE) synth STACK=dev
	$(MAKE) synth STACK=prod
	$(MAKE) synth-all-options STACK=dev
	$(MAKE) synth-all-options STACK=prod
	$(BIN)/python -m checks dev prod dev-all-options prod-all-options

checkov: $(CHECKOV_STAMP)

# promtool, amtool, Prometheus and Alertmanager (Debian/Ubuntu packages): installed with apt-get as
# root or with password-less sudo; elsewhere what needs them is skipped with a line saying how to
# install them, except in CI (CI or REQUIRE_PROMETHEUS=1), where that fails (checks/system_tools.py).
system-tools: $(STAMP)
	$(BIN)/python -m checks.system_tools

$(CHECKOV_STAMP):
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/pip install -q 'checkov==$(CHECKOV_VERSION)'
	touch $@
