# Every target creates or refreshes .venv from scratch-safe steps, so a fresh clone needs nothing else.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, from the local wheel: any other spec would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# the main job, offline: toy-llava on the toy world's POPE and CHAIR, vanilla and 12 methods, leaderboard
demo: $(STAMP)
	$(VENV)/bin/halluc run --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# on a GPU machine: nothing is installed; the python is .venv's if there is one, else python3 (README)
gpu-check:
	PYTHON="$${PYTHON:-$$(test -x $(PY) && echo $(PY) || echo python3)}" bash speed/gpu_check.sh $(ARGS)

clean:
	rm -rf $(VENV)
