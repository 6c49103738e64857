# The README's two commands: `make run` and `make test`. Both build .venv from nothing when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow test-zoo chaos test-all test-fast bench clean

# torch first, pinned: an unpinned torch (or any package that asks for one) pulls CUDA builds.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# dcgan and wgan_gp (params.yaml's families), 90 s of training each: both pass the zoo's bars at 300 s
run: $(STAMP)
	$(BIN)/ganzoo run --params params.yaml --set train.max_seconds=90 --set train.steps=3000

# The suite (under 20 minutes on 2 cores): unit, contract and integration tests, except those marked slow.
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" tests

# The slow integration tests (multi-node, serve, submit, learning); CI runs them too.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "slow and not zoo and not chaos" tests

# Fault injection with real processes: killed workers and drivers, a diverging family, a locked registry
# (docs/reliability.md); CI runs them too.
chaos: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m chaos tests

# Whole flow runs over each group of families: the families' smoke tests on Ray and their quality checks,
# in two runs of under 20 minutes each: noise-to-image, paired and segmentation; then unpaired and multi-domain.
test-zoo: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m zoo tests --ignore=tests/integration/test_domain_flow.py
	$(BIN)/python -m pytest -q -p no:cacheprovider -m zoo tests/integration/test_domain_flow.py

test-all: test test-slow test-zoo chaos

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" tests

# The performance figures of docs/performance.md (not part of make test; on 2 cores about 80 minutes, plus
# 40 for each of the two three-seed quality runs):
# each script prints its table and merges its section into benchmarks/results.json.
bench: $(STAMP)
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/evaluation_speed.py --repeats 5
	$(BIN)/python benchmarks/evaluation_speed.py --large 50000
	$(BIN)/python benchmarks/evaluation_speed.py --thread-allocator --repeats 3
	$(BIN)/python benchmarks/trainer_overhead.py --repeats 5
	$(BIN)/python benchmarks/trainer_overhead.py --section placement --repeats 3
	$(BIN)/python benchmarks/trainer_overhead.py --section openmp --repeats 5 --scale 0.5
	$(BIN)/python benchmarks/trainer_overhead.py --section allocator --repeats 5
	$(BIN)/python benchmarks/trainer_overhead.py --section allreduce --repeats 5
	$(BIN)/python benchmarks/pipeline_overhead.py --repeats 3
	$(BIN)/python benchmarks/cost_growth.py --repeats 3
	$(BIN)/python benchmarks/precision.py
	$(BIN)/python benchmarks/quality_per_minute.py --variant wgan_gp:n_critic=2
	$(BIN)/python benchmarks/quality_per_minute.py --families "" --section quality_per_minute_tuning --variant dcgan:lr=4e-4 --variant dcgan:batch=32 --variant wgan_gp:n_critic=2,lr=2e-4 --variant wgan_gp:n_critic=2,lr=4e-4 --variant wgan_gp:n_critic=2,batch=32 --variant cgan:lr=5e-4 --variant cgan:lr=1e-3 --variant cgan:batch=32 --variant cgan:batch=128
	$(BIN)/python benchmarks/quality_per_minute.py --families "" --variant dcgan:ema_decay=0.999 --variant wgan_gp:n_critic=2,ema_decay=0.999 --variant cgan:ema_decay=0.999 --section quality_per_minute_ema
	$(BIN)/python benchmarks/quality_per_minute.py --families "" --section quality_per_minute_shipped --seeds 3 --variant dcgan:lr=4e-4 --variant wgan_gp:n_critic=2,lr=4e-4 --variant cgan:lr=1e-3
	$(BIN)/python benchmarks/quality_per_minute.py --families "" --section quality_per_minute_above --seeds 3 --variant dcgan:lr=8e-4 --variant wgan_gp:n_critic=2,lr=8e-4 --variant cgan:lr=2e-3

clean:
	rm -rf $(VENV) runs data/prepared
