# One entry point for people and CI. Every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ENV ?= dev
# jsii prints a Node 20 end-of-life banner on every run; the value is the Node major version.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PATH := $(CURDIR)/$(BIN):$(PATH)
CDK := npx --no-install cdk

.PHONY: help setup setup-dev synth deploy diff destroy lint format test test-fast demo bench-train clean

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(VENV)/.runtime node_modules/.installed ## Runtime virtualenv + CDK CLI

setup-dev: setup $(VENV)/.dev ## Everything tests, the demo and benchmarks need

synth: setup ## Synthesize every stack into cdk.out/ and print the compliance report (no AWS account needed)
	$(CDK) synth --quiet -c env=$(ENV)
	$(BIN)/python -m stacks.nag_report cdk.out

deploy: setup ## Deploy every stack (needs credentials and a bootstrapped account: npx cdk bootstrap)
	$(CDK) deploy --all -c env=$(ENV) --require-approval broadening

diff: setup ## Compare the deployed stacks with the code
	$(CDK) diff --all -c env=$(ENV)

destroy: setup ## Delete the stacks; buckets, key, Studio domain, registry and logs are retained
	$(CDK) destroy --all -c env=$(ENV)

lint: setup-dev ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup-dev ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: setup-dev lint ## Lint, then the whole test suite (offline, both cores)
	$(BIN)/python -m pytest -n 2 --dist worksteal

test-fast: setup-dev ## The suite without the slow (training / pipeline) tests
	$(BIN)/python -m pytest -m "not slow"

demo: setup-dev ## No AWS account: fine-tune a tiny LLM twice through the real workflow, print the runs
	$(BIN)/finetune demo

bench-train: setup-dev ## Training throughput: our trainer vs TRL SFTTrainer defaults
	$(BIN)/python benchmarks/bench_train.py

.PHONY: bench-train-gpu
# No setup: GPU machines bring their own CUDA PyTorch stack (and may have no network).
bench-train-gpu: ## GPU training: tokens/s, MFU, memory for 1 and all GPUs (< 8 min on one H200)
	$(PYTHON) benchmarks/bench_train_gpu.py $(ARGS)

clean: ## Remove build outputs and local-backend state (keeps the virtualenv and node_modules)
	rm -rf cdk.out .finetune .pytest_cache .mypy_cache .ruff_cache

# The serving container's model-reading packages (transformers, tokenizers, huggingface-hub,
# safetensors at the pins in training_code/llm_sft/serving_contract.py: TGI 3.3.6), installed
# beside the main virtualenv with --no-deps so torch (and the rest) come from .venv behind them
# on PYTHONPATH and pip never pulls a CUDA torch. ~5 s. tests/serving loads trained models with it.
SERVING_ENV := $(VENV)/serving-contract
$(SERVING_ENV)/.installed: $(VENV)/.dev training_code/llm_sft/serving_contract.py
	rm -rf $(SERVING_ENV)
	$(BIN)/pip install --quiet --no-deps --target $(SERVING_ENV) \
		$$($(BIN)/python -m llm_sft.serving_contract requirements)
	@touch $@

.PHONY: setup-serving
setup-serving: $(SERVING_ENV)/.installed ## The serving stack's pinned packages for tests/serving
test test-fast: $(SERVING_ENV)/.installed
