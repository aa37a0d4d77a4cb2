# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export MPLCONFIGDIR ?= $(CURDIR)/.cache/mpl
export QT_QPA_PLATFORM ?= offscreen

.PHONY: venv demo test bench lint clean

# numba kernels compiled once here, into the cache flow's workers read ($NUMBA_CACHE_DIR, else
# ~/.cache/flow-iact/numba): the first run loads them instead of compiling (stages/warm.py).
venv: $(VENV)/.warmed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,gui,ctapipe,ml,metrics]'
	touch $@

# then one short demo run: its workers record the kernels they ran, which every later run's worker
# template loads before it forks (flow/engine/kernels.py)
$(VENV)/.warmed: $(VENV)/.installed $(wildcard stages/*.py stages/io/*.py)
	$(BIN)/python -m stages.warm
	$(BIN)/flow run configs/demo.yaml --quiet --set read.n_events=200 \
	  --set write.path=$(VENV)/warm-demo.h5 >/dev/null && rm -f $(VENV)/warm-demo.h5
	touch $@

demo: venv
	$(BIN)/flow run configs/demo.yaml

test: venv
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/throughput.py --quick
	$(BIN)/python bench/scaling.py --quick
	$(BIN)/python bench/stages.py --quick
	$(BIN)/python bench/realdata.py --quick
	$(BIN)/python bench/simtel_reader.py --quick
	$(BIN)/python bench/gui_overhead.py --quick

lint: venv
	$(BIN)/ruff check flow stages gui tests bench

clean:
	rm -rf $(VENV) .cache build *.egg-info
