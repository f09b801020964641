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

doctor: setup
	$(PY) -m pipeline doctor

clean:
	rm -rf runs spark-warehouse .pytest_cache
