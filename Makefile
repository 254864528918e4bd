# carseg — the two set-up commands are `make demo` and `make test` (each installs if needed).
# What each target does and how long it takes on 2 cores: docs/development.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CARSEG := $(VENV)/bin/carseg
# carseg itself defaults to it (carcli/threads.py); the test suite imports torch before the
# CLI, so the variable is also exported here for it.
export OMP_WAIT_POLICY ?= PASSIVE
RECIPE ?= recipes/toy.yaml

.PHONY: install demo demo-predict test test-all lint format bench bench-threads controls variants m-study unseen regression regression-sweep clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: install
	$(CARSEG) prepare $(RECIPE) --overwrite
	$(CARSEG) train-calibrator $(RECIPE) --overwrite
	$(CARSEG) train-refiner $(RECIPE) --overwrite
	$(CARSEG) sample $(RECIPE) --overwrite
	$(CARSEG) evaluate $(RECIPE) --overwrite
	$(CARSEG) plot-reliability $(RECIPE) --overwrite
	@if [ "$(RECIPE)" = recipes/toy.yaml ]; then $(MAKE) --no-print-directory demo-predict; fi

# The end of the toy demo: export the model, write four test images as PNG files, predict.
demo-predict: install
	$(CARSEG) export recipes/toy.yaml --overwrite
	$(PY) scripts/demo_images.py data/toy/test.h5 runs/toy/demo_images --count 4
	$(CARSEG) predict runs/toy/bundle runs/toy/demo_images --out runs/toy/predictions --overwrite
	$(CARSEG) status recipes/toy.yaml

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m ''

lint: install
	$(VENV)/bin/ruff check carcli tests scripts bench experiments
	$(VENV)/bin/ruff format --check carcli tests scripts bench experiments

format: install
	$(VENV)/bin/ruff format carcli tests scripts bench experiments
	$(VENV)/bin/ruff check --fix carcli tests scripts bench experiments

bench: install
	$(PY) bench/run.py

# carseg's thread defaults beside a busy process: train and evaluate, with and without the
# variables in the environment (issue 20).
bench-threads: install
	$(PY) bench/threads.py

# The paper's controls beside the method on the toy set.
controls: install
	$(VENV)/bin/carseg prepare $(RECIPE) --overwrite --quiet
	scripts/controls.sh $(RECIPE)

# The paper's variants (latent-code refiner with L_cal or beta-KL, joint F) sharing one F;
# table in runs/variants.md.
variants: install
	$(VENV)/bin/carseg prepare $(RECIPE) --overwrite --quiet
	scripts/variants.sh $(RECIPE)

# The paper's Table 3: M in {1, 5, 10, 20} sharing one F; table in runs/m-study.md.
m-study: install
	$(VENV)/bin/carseg prepare $(RECIPE) --overwrite --quiet
	scripts/m_study.sh $(RECIPE)

# The toy recipe on an unseen 64x64, 4-class synthetic set.
unseen: install
	scripts/unseen.sh $(RECIPE)

# The 1D bimodal regression (pi 0.9, sigma 0.03, lambda = 1), every stage.
regression: install
	$(MAKE) demo RECIPE=recipes/regression.yaml

# The paper's Fig. 7 sweep: 3 pi x 3 sigma x lambda in {0, 1} x 5 seeds, two processes.
regression-sweep: install
	$(PY) scripts/regression_sweep.py --jobs 2

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
