# Two commands do all the set-up on a fresh machine with Python 3.11 and no ROS:
#   make demo   tabletop simulator + selector node over real DDS, shipped default model
#               (DEMO_ARGS="--task continuous": continuous actions, models/tabletop_continuous)
#   make test   the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Each run gets its own DDS domain so concurrent runs on one machine never see each other.
DOMAIN_ID := $(shell echo $$(( ($$$$ % 80) + 20 )))
ROS_ENV := AMENT_PREFIX_PATH=$(abspath $(VENV)) ROS_DOMAIN_ID=$(DOMAIN_ID) RMW_IMPLEMENTATION=rmw_fastrtps_cpp

.PHONY: venv test demo lint train eval bench clean

venv: $(STAMP)

# requirements.txt pins torch with no index: on a machine without a local wheel, pip takes
# PyPI's torch, the CUDA build (GBs). PIP_EXTRA_INDEX names an extra index to search too, e.g.
#   make demo PIP_EXTRA_INDEX=https://download.pytorch.org/whl/cpu
# where pip prefers torch's +cpu wheel. Empty by default, so the default install never
# contacts it and works where it cannot be reached. pip shows its progress (GBs take a while).
PIP_EXTRA_INDEX ?=
PIP_INSTALL = $(PY) -m pip install --disable-pip-version-check --progress-bar on \
	$(if $(PIP_EXTRA_INDEX),--extra-index-url $(PIP_EXTRA_INDEX))

$(STAMP): requirements.txt setup.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or run: make PYTHON=python3 ...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements.txt into $(VENV): torch is large (the CUDA build GBs)"
	$(PIP_INSTALL) -r requirements.txt
	$(PIP_INSTALL) --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(ROS_ENV) $(PY) -m pytest test $(PYTEST_ARGS)

demo: $(STAMP)
	$(ROS_ENV) $(PY) -m vla_embedding_ros.ros.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check vla_embedding_ros test bench launch

train: $(STAMP)
	$(PY) -m vla_embedding_ros.training.train --config config/train_tabletop.yaml $(TRAIN_ARGS)

# The shipped model on every split, with the baselines and 50 replayed demo streams.
eval: $(STAMP)
	$(PY) -m vla_embedding_ros.training.evaluate --model models/tabletop --replay-streams 50 \
		--splits val $(EVAL_ARGS)

# The bench/ tables (bench/README.md holds the latest); a few minutes on 2 CPU cores.
bench: $(STAMP)
	$(ROS_ENV) $(PY) bench/node_latency.py $(BENCH_ARGS)
	$(PY) bench/scoring_scale.py $(BENCH_ARGS)
	$(PY) bench/encoder_throughput.py $(BENCH_ARGS)
	$(PY) bench/query_path.py $(BENCH_ARGS)
	$(PY) bench/train_throughput.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build install log .pytest_cache
