# Every target creates or refreshes .venv from scratch-safe steps, so a fresh clone needs nothing else.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# lmms-eval's plugin test (tests/integrations) runs in a second environment: lmms-eval pulls packages (and,
# unconstrained, a CUDA torch) that the main .venv must not get. constraints/lmms-eval.txt says why each pin.
LMMS_VENV ?= .venv-lmms
LMMS_PY := $(LMMS_VENV)/bin/python
LMMS_STAMP := $(LMMS_VENV)/.installed

.PHONY: venv venv-lmms test typecheck demo gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, from the local wheel: any other spec would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

$(LMMS_STAMP): pyproject.toml constraints/lmms-eval.txt
	test -x $(LMMS_PY) || python3 -m venv $(LMMS_VENV)
	$(LMMS_PY) -m pip install -q --upgrade pip
	$(LMMS_PY) -m pip install -q torch==2.13.0
	$(LMMS_PY) -m pip install -q -c constraints/lmms-eval.txt -e '.[lmms-eval]' pytest
	# PyPI's torchvision for torch 2.13 is a CUDA build that fails at import on the CPU torch; nothing here needs it
	$(LMMS_PY) -m pip uninstall -y -q torchvision
	touch $(LMMS_STAMP)

venv-lmms: $(LMMS_STAMP)

# the suite in .venv (tests/integrations skips there: no lmms-eval), then the lmms-eval tests in .venv-lmms
test: $(STAMP) $(LMMS_STAMP)
	$(PY) -m pytest -q tests
	$(LMMS_PY) -m pytest -q tests/integrations

# mypy over halluc/ with pyproject.toml's [tool.mypy] settings (`make test` runs it too: tests/test_types.py)
typecheck: $(STAMP)
	$(PY) -m mypy

# the main job, offline: toy-llava on the toy world's POPE and CHAIR, vanilla and 16 methods, leaderboard
demo: $(STAMP)
	$(VENV)/bin/halluc run --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# on a GPU machine: nothing is installed; the python is .venv's if there is one, else python3 (README)
gpu-check:
	PYTHON="$${PYTHON:-$$(test -x $(PY) && echo $(PY) || echo python3)}" bash speed/gpu_check.sh $(ARGS)

clean:
	rm -rf $(VENV) $(LMMS_VENV)
