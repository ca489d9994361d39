# Quick start: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo bench bench-swarm bench-tracker clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) demo/run.py

bench-swarm: $(STAMP)
	$(PY) bench/swarm.py

bench-tracker: $(STAMP)
	$(PY) bench/tracker.py

# make bench TOPOLOGY=4x4: racks behind oversubscribed uplinks, rack-aware peer choice on and off.
bench: $(STAMP)
ifdef TOPOLOGY
	$(PY) bench/topology.py --topology $(TOPOLOGY)
else
	$(PY) bench/datacenter.py
endif

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
