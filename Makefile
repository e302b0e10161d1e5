# Every command the README names. `make setup` is implied by the others: a fresh machine needs only these.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU wheel of torch is installed first so that nothing pulls a multi-GB CUDA build on a CPU machine.
TORCH_SPEC ?= torch==2.13.0
STACK ?= dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup serve test lint fmt synth bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH_SPEC)'
	$(BIN)/pip install -q -e '.[serve,minilm,infra,dev]'
	touch $@

serve: $(STAMP)
	$(BIN)/python -m service --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest
	$(MAKE) lint

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

synth: $(STAMP)
	$(BIN)/python -m infra.synth $(STACK) --out build/synth/$(STACK)
