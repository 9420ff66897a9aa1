# make help lists the targets. Every target bootstraps .venv from pyproject.toml first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON3 ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

# training: make train NPROC=4 [STEPS=..] [DATA=..] [OUT=..] [ARGS="..."]
NPROC ?= 2
NNODES ?= 1
NODE_RANK ?= 0
MASTER_ADDR ?= 127.0.0.1
LOCAL_ADDR ?=
MASTER_PORT ?= 29500
RDZV_TIMEOUT ?= 300
MAX_RESTARTS ?= 0
OUT ?= checkpoints
STEPS ?=
DATA ?=
ARGS ?=
# torchrun's c10d rendezvous shares one store across restarts, so restarted workers can read the
# dead workers' gloo addresses and hang (pytorch/pytorch#135712): a fresh store for every attempt.
train: export TORCH_DISABLE_SHARE_RDZV_TCP_STORE ?= 1

# The one quoting rule: every value reaches its program as one shell word, whatever it holds
# (spaces, quotes, `$`, newlines): make train OUT='my runs'. ARGS alone is split into words, being
# flags. A recipe names the value $(call passed,NAME), the environment variable MAKE_NAME (exported
# below) in double quotes: the shell passes it on whole without reading it. Written into the recipe
# itself, a newline in a value would end the recipe's line there (make runs each line on its own).
passed = "$$MAKE_$(1)"
TRAIN_FLAGS = --out $(call passed,OUT) $(if $(DATA),--data $(call passed,DATA)) \
              $(if $(STEPS),--steps $(call passed,STEPS)) $(ARGS)

# export and generation
CKPT ?= $(OUT)/model.pt
MODEL ?= $(OUT)/model.pt
PROMPT ?= ROMEO:
TOKENS ?= 200
TEMPERATURE ?= 0.8
TOP_K ?=
SEED ?=
SAMPLING_FLAGS = --tokens $(call passed,TOKENS) --temperature $(call passed,TEMPERATURE) \
                 $(if $(TOP_K),--top-k $(call passed,TOP_K)) $(if $(SEED),--seed $(call passed,SEED))
# the browser page (web/): its npm packages are reinstalled when web/package-lock.json changes
PORT ?= 8000
NODE_STAMP := web/node_modules/.installed-$(shell cksum < web/package-lock.json | cut -d' ' -f1)
# benchmarks
NPROCS ?= 1,2,4
ROUNDS ?= 3
BENCH_OUT ?= bench/results.json
QUALITY_STEPS ?= 3000
TARGET ?= 1.50
QUALITY_OUT ?= bench/quality.json
RATES ?= 10gbit,1gbit,100mbit
LINK_OUT ?= bench/link.json
SIZES ?= 1,100,1000

.PHONY: help install web-install serve train lint test export generate cpp-generate bench bench-quality bench-levers bench-link bench-profile bench-micro bench-data plot clean

help: ## list the targets, each with the variables it reads and their values now (the defaults)
	@printf '%s\n' $(foreach v,$(HELP_VARS),"$(v)=$$MAKE_$(v)") | awk ' \
	  FNR == NR { i = index($$0, "="); value[substr($$0, 1, i - 1)] = substr($$0, i + 1); next } \
	  /^#> / { rest = substr($$0, index($$0, $$3) + length($$3) + 1); \
	           doc[$$2] = doc[$$2] sprintf("    %-26s %s\n", $$3 "=" value[$$3], rest); next } \
	  /^[a-z-]+:.*## / { n++; order[n] = substr($$0, 1, index($$0, ":") - 1); \
	                     text[order[n]] = substr($$0, index($$0, "## ") + 3) } \
	  END { for (i = 1; i <= n; i++) printf "%-14s %s\n%s", order[i], text[order[i]], doc[order[i]] }' \
	  - $(firstword $(MAKEFILE_LIST))

# The variables each target reads, for make help: `#> target VARIABLE what it sets`.
#> install PYTHON3 the Python that creates .venv
#> train NPROC processes on this machine (each a DDP rank); must divide the batch of 32
#> train STEPS optimiser steps (empty: 3000, or on --resume the checkpoint's own total)
#> train DATA UTF-8 corpus: a file, a folder or a glob (empty: data/tinyshakespeare.txt, downloaded if missing)
#> train OUT directory for model.pt, metrics.jsonl, loss.png and the exports
#> train ARGS more trainer flags, e.g. ARGS="--resume" (python -m trainer --help lists them)
#> train MAX_RESTARTS times torchrun restarts failed workers, which resume from the last checkpoint
#> train NNODES machines in the run (each runs make train with the same variables)
#> train NODE_RANK this machine's label, 0 to NNODES-1: 0 hosts the rendezvous (it has MASTER_ADDR)
#> train MASTER_ADDR address of node 0 (with NNODES > 1)
#> train LOCAL_ADDR this machine's address for the other nodes (empty: its end of the route to MASTER_ADDR)
#> train MASTER_PORT rendezvous port on node 0 (with NNODES > 1)
#> train RDZV_TIMEOUT seconds to wait for all NNODES machines to join
#> train OMP_NUM_THREADS threads per process (empty: this machine's cores / NPROC)
#> test DATA Tiny Shakespeare for the tests (empty: data/ or ../shared/data/)
#> export CKPT the training checkpoint to export
#> generate MODEL model.pt, model.ts, model.pt2, model.onnx or the hf folder (through transformers)
#> generate PROMPT text the generated characters follow
#> generate TOKENS characters to generate
#> generate TEMPERATURE sampling temperature; 0 = always the likeliest character
#> generate TOP_K sample among the K likeliest characters only (empty: all)
#> generate SEED seed of the sampling (empty: a random one)
#> cpp-generate MODEL a TorchScript model.ts (left unset: OUT/model.ts, whatever is shown here)
#> cpp-generate PROMPT text the generated characters follow
#> cpp-generate TOKENS characters to generate
#> cpp-generate TEMPERATURE sampling temperature; 0 = always the likeliest character
#> cpp-generate TOP_K sample among the K likeliest characters only (empty: all)
#> cpp-generate SEED seed of the sampling (empty: a random one)
#> serve OUT the run's directory, whose model.onnx and model.json the page loads
#> serve PORT the page's port on 127.0.0.1
#> bench NPROCS comma-separated process counts to time
#> bench ROUNDS times every row this many times, in turn, and keeps each row's fastest
#> bench BENCH_OUT JSON file for the results
#> bench DATA UTF-8 corpus (empty: data/tinyshakespeare.txt)
#> bench-quality QUALITY_STEPS training steps of every run
#> bench-quality TARGET the validation loss to reach
#> bench-quality NPROC processes of each recipe's run
#> bench-quality QUALITY_OUT JSON file for the results
#> bench-quality DATA UTF-8 corpus (empty: data/tinyshakespeare.txt)
#> bench-levers ROUNDS times every row this many times, in turn, and keeps each row's fastest
#> bench-levers DATA UTF-8 corpus (empty: data/tinyshakespeare.txt)
#> bench-link RATES comma-separated rates of the link between the two machines, as tc writes them
#> bench-link ROUNDS times every job this many times, in turn, and keeps each row's fastest
#> bench-link LINK_OUT JSON file for the results (python -m bench.scaling LINK_OUT --plot PNG draws the model)
#> bench-link DATA UTF-8 corpus (empty: data/tinyshakespeare.txt)
#> bench-profile DATA UTF-8 corpus (empty: data/tinyshakespeare.txt)
#> bench-data SIZES generated corpus sizes in MB, comma-separated (each deleted after its row)
#> bench-data NPROC processes of each make train it times
#> plot OUT the run's directory: reads metrics.jsonl, writes loss.png
HELP_VARS = $(sort $(shell sed -nE 's/^\#> [a-z-]+ ([A-Z_0-9]+) .*/\1/p' $(firstword $(MAKEFILE_LIST))))

# Make expands a `$` in a value wherever the variable is used (OUT='d$x' would be OUT=d): each
# variable above, when set on the command line or in the environment, becomes its text as typed.
# Command-line values stay in the programs' environment (DATA reaches the tests) once made literal.
$(foreach v,$(HELP_VARS),$(if $(filter command line environment,$(origin $(v))),\
  $(eval override $(v) := $$(value $(v)))$(if $(filter override,$(origin $(v))),$(eval export $(v)))))

# MAKE_<NAME> for every variable above, and for cpp-generate's CPP_MODEL: its value at the time a
# recipe runs, in that target's context.
$(foreach v,$(HELP_VARS) CPP_MODEL,$(eval export MAKE_$(v) = $$($(v))))

# A target refuses an empty value of the variables it needs, in one line and exit status 2, as the
# programs refuse a bad flag: OUT= would put a run's files in the repository's root, CKPT= names no file.
require = @$(foreach v,$(1),test -n $(call passed,$(v)) || { echo "error: $(v) is empty: give it a \
  value, or leave it unset for its default (make help shows it)" >&2; exit 2; };)

$(STAMP): pyproject.toml
	$(call require,PYTHON3)
	rm -f $(VENV)/.installed-*
	test -x $(PY) || $(call passed,PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(STAMP) ## create .venv with the pinned dependencies (torch 2.13.0 CPU) and the dev tools (pytest, ruff)

$(NODE_STAMP): web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	touch $@

web-install: $(NODE_STAMP) ## npm ci in web/: the pinned onnxruntime-web and playwright-core (no browser download)

serve: $(STAMP) $(NODE_STAMP) ## the generation page on http://127.0.0.1:PORT/ with OUT's model.onnx and model.json: OUT= PORT=8000
	$(call require,OUT)
	@$(PY) -m web.serve --out $(call passed,OUT) --port $(call passed,PORT)

# trainer.launch checks the variables, dry-runs the trainer, then runs torchrun in-process (threads
# per rank: this machine's cores / NPROC unless OMP_NUM_THREADS is set). $$PPID is this make: after
# Ctrl-C the launcher lets make end by the signal, without an error line after the resume command.
train: $(STAMP) ## train under torchrun: NPROC=4 STEPS= DATA= OUT= ARGS="..." MAX_RESTARTS= NNODES= NODE_RANK= MASTER_ADDR= MASTER_PORT= LOCAL_ADDR= RDZV_TIMEOUT=
	$(call require,OUT)
	@$(PY) -m trainer.launch --nproc $(call passed,NPROC) --nnodes $(call passed,NNODES) \
		--node-rank $(call passed,NODE_RANK) --master-addr $(call passed,MASTER_ADDR) \
		--local-addr $(call passed,LOCAL_ADDR) \
		--master-port $(call passed,MASTER_PORT) --max-restarts $(call passed,MAX_RESTARTS) \
		--rdzv-timeout $(call passed,RDZV_TIMEOUT) --make-pid $$PPID -- $(TRAIN_FLAGS)

lint: $(STAMP) ## ruff (pinned in pyproject.toml, configured there): pyflakes, pycodestyle, import order, complexity <= 10; no import cycle
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests/unit/test_imports.py

# The linter and the millisecond unit tests first: a broken function fails in seconds, not after
# the tests that start processes. Those run in two pytest workers (pytest-xdist), one per core of a
# 2-core machine: the programs they start keep both cores busy (93% of the run, measured), and a
# third worker finished no sooner.
# --dist loadfile: a test file runs on one worker, so its module fixtures (reference runs, exports, the
# page) are made once, not once on each.
test: lint $(NODE_STAMP) ## lint, the unit tests (seconds), then the rest (real model, gloo, torchrun, Chromium)
	$(PY) -m pytest -q tests/unit
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25 tests --ignore=tests/unit

export: $(STAMP) ## write model.ts, model.pt2, model.onnx, hf/, model.json beside CKPT (default checkpoints/model.pt)
	$(call require,OUT CKPT)
	$(PY) -m export $(call passed,CKPT)

# --prompt=...: a prompt that starts with "-" is still the prompt.
generate: $(STAMP) ## print text from MODEL (.pt .ts .pt2 .onnx hf/): PROMPT= TOKENS= TEMPERATURE= TOP_K= SEED=
	$(call require,OUT MODEL)
	@$(PY) -m export.generate $(call passed,MODEL) --prompt=$(call passed,PROMPT) $(SAMPLING_FLAGS)

# The C++ program loads TorchScript only: MODEL defaults to OUT/model.ts here, and any other file is refused.
cpp-generate: CPP_MODEL = $(if $(filter file,$(origin MODEL)),$(OUT)/model.ts,$(MODEL))
cpp-generate: $(STAMP) ## build the libtorch C++ generator and run it on MODEL=OUT/model.ts: PROMPT= TOKENS= TEMPERATURE= TOP_K= SEED=
	$(call require,OUT MODEL)
	@$(PY) -m export.cpp $(call passed,CPP_MODEL) --prompt=$(call passed,PROMPT) $(SAMPLING_FLAGS)

bench: $(STAMP) ## steps/s by NPROC (NPROCS=1,2,4) vs the textbook loop and the adamw recipe, best of ROUNDS, MFU, generation tokens/s -> BENCH_OUT
	$(call require,BENCH_OUT)
	$(PY) -m bench --nprocs $(call passed,NPROCS) --rounds $(call passed,ROUNDS) \
		--out $(call passed,BENCH_OUT) $(if $(DATA),--data $(call passed,DATA))

bench-quality: $(STAMP) ## time to quality: steps and training seconds to val <= TARGET of each recipe and the textbook loop -> QUALITY_OUT
	$(call require,QUALITY_OUT)
	$(PY) -m bench.quality --steps $(call passed,QUALITY_STEPS) --target $(call passed,TARGET) \
		--nproc $(call passed,NPROC) --out $(call passed,QUALITY_OUT) $(if $(DATA),--data $(call passed,DATA))

bench-levers: $(STAMP) ## steps/s of each speed lever (dtype, threads, dropout, torch.compile, DDP, kept memory, pinning)
	$(PY) -m bench.levers --rounds $(call passed,ROUNDS) $(if $(DATA),--data $(call passed,DATA))

# Two "machines" are network namespaces of this one (root only, tests/netns.py), one rank each.
bench-link: $(STAMP) ## steps/s of 2 machines (namespaces, root) over each link rate vs 1, with and without bf16 gradients; scaling model -> LINK_OUT
	$(call require,RATES LINK_OUT)
	$(PY) -m bench.link --rates $(call passed,RATES) --rounds $(call passed,ROUNDS) \
		--out $(call passed,LINK_OUT) $(if $(DATA),--data $(call passed,DATA))

bench-profile: $(STAMP) ## where a training step's time goes (torch.profiler), default dtype and fp32
	$(PY) -m bench.profile $(if $(DATA),--data $(call passed,DATA))

bench-data: $(STAMP) ## corpus size: tokenize MB/s, seconds to the first step (cold, cached), peak RSS per process
	$(PY) -m bench.data --sizes $(call passed,SIZES) --nproc $(call passed,NPROC) \
		$(if $(DATA),--data $(call passed,DATA))

bench-micro: $(STAMP) ## pytest-benchmark micro-benchmarks (forward+backward, all-reduce, sampling, Adam)
	$(PY) -m pytest -q bench/micro

plot: $(STAMP) ## draw OUT/loss.png from OUT/metrics.jsonl
	$(call require,OUT)
	$(PY) -m trainer.plot $(call passed,OUT)

clean: ## remove build outputs (keeps .venv, data and checkpoints)
	rm -rf build bench/micro/.benchmarks .pytest_cache
