# The README's commands. `make run` and `make test` set up first when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= conf/digits_cnn.yaml
NP ?= 2
PYTEST_ARGS ?=

.PHONY: setup run test test-fast test-multihost bench clean doctor

setup:
	@bash deploy/local/setup.sh

run: setup
	$(PY) -m pipeline run --config $(CONFIG) --np $(NP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not spark and not dist and not e2e and not s3 and not multihost" $(PYTEST_ARGS)

# The tests on the multi-host rig (network namespaces; root). `make test` runs them too.
test-multihost: setup
	$(PY) -m pytest -m multihost $(PYTEST_ARGS)

# Every benchmark on this machine, one after the other, then the goal table in docs/benchmarks.md
# from bench/results/*.json: 39 minutes on a 2-core VM, 14 of them the 5-seed accuracy runs
# (BENCH_ACCURACY_SEEDS=1: the goals' shipped seed only, about 28 minutes). On the multi-host
# rig: bench/startup.py and bench/train.py with --multihost; on a GPU machine: bench/gpu-check.sh.
BENCH_ACCURACY_SEEDS ?= 5
bench: setup
	$(PY) bench/plan.py
	$(PY) bench/reader.py
	$(PY) bench/train.py
	$(PY) bench/startup.py
	$(PY) bench/prep.py
	$(PY) bench/accuracy.py --seeds $(BENCH_ACCURACY_SEEDS)
	$(PY) bench/table.py

doctor: setup
	$(PY) -m pipeline doctor

# Everything runs and tests leave behind: runs, prepared dataset versions (data/ but its
# raw/ inputs), Spark's scratch, the local cluster's state, build outputs.
clean:
	rm -rf runs spark-warehouse metastore_db derby.log .pytest_cache .spark-cluster build
	find data -mindepth 1 -maxdepth 1 ! -name raw -exec rm -rf {} +
