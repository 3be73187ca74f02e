# Two commands for a new user: `make run` (set up + the whole pipeline) and
# `make test` (set up + the test suite). Both reuse .venv on a second run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: install run test test-fast flow bench bench-quick clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	gans repair-lock
	dvc repro
	@if dvc remote default >/dev/null 2>&1; then dvc push; fi
	gans summary

flow: install
	gans flow

test: install
	pytest

test-fast: install
	pytest -m "not e2e"

clean:
	rm -rf data/prepared data/augmented models metrics plots samples mlflow.db mlartifacts

bench: install
	python bench/variants.py --jobs 2
	python bench/eval.py
	python bench/perf.py
	python bench/ada.py
	python bench/faults.py --seeds 19,1,2
	python bench/export.py
	python bench/precision.py
	python bench/translation.py
	python bench/superres.py
	python bench/stargan.py
	python bench/pool.py
	python bench/explore.py
	python bench/pixelcnn.py
	python bench/semisup.py
	python bench/coupled.py

bench-quick: install
	python bench/variants.py --steps 200 --width 32 --samples 1000 --presets dcgan,wgan-gp,sngan,cgan --title "Variants (quick: 200 steps, width 32)"
	python bench/eval.py --samples 2000
	python bench/perf.py --quick
	python bench/ada.py --sizes 500 --steps 200 --samples 1000 --overhead-windows 3 --title "ADA and DiffAugment on limited data (quick: 200 steps)"
	python bench/superres.py --pixel-steps 300 --gan-steps 300 --evaluator-epochs 8 --esrgan-blocks 2 --title "Super-resolution (quick: 300 + 300 steps)"
	python bench/pixelcnn.py --steps 200 --samples 500 --title "PixelCNN beside the GANs (quick: 200 steps)"
	python bench/semisup.py --steps 200 --samples 500 --draws 1 --title "Semi-supervised classification (quick: 200 steps)"
	python bench/coupled.py --steps 200 --samples 500 --sources mnist5k-negatives --title "Coupled GANs (quick: 200 steps)"
