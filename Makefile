# The two commands of README.md:
#   make demo   set up .venv, build, run the main job: the character-level language
#               model (python -m rnnkernels charlm; writes runs/charlm/)
#   make test   set up .venv, build, run the test suite
# `make setup` alone (re)builds; it reruns whenever a source of the build changes.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rnnkernels-built
BUILD_INPUTS := setup.py pyproject.toml scripts/setup_env.sh $(shell find csrc -name '*.h' -o -name '*.cpp' -o -name '*.cu')

.PHONY: setup demo test test-all

$(STAMP): $(BUILD_INPUTS)
	bash scripts/setup_env.sh
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m rnnkernels charlm

test: $(STAMP)
	RNNKERNELS_REQUIRE_CPU_BACKEND=1 $(PY) -m pytest

test-all: $(STAMP)
	RNNKERNELS_REQUIRE_CPU_BACKEND=1 $(PY) -m pytest -m ""
