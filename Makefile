# The two set-up commands: `make demo` (maps of the embedded demo region) and `make test`.
# Each creates the virtual environment .venv from pyproject.toml first if it is missing or stale;
# `make test` also installs the system packages some tests use (scripts/system-packages.sh:
# gdal-bin, slurm-wlm and munge, with apt-get when run as root; else it says what is missing).
PYTHON ?= python3.11
HERE := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
HERE_PYTHON := $(firstword $(wildcard $(HERE).venv/bin/python) python3)
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= 2

.PHONY: demo demo-reports test system-packages env lint clean-demo

env: $(STAMP)

$(STAMP): pyproject.toml
	@echo "Setting up $(VENV) from pyproject.toml: about 6 GB of packages (PyTorch included)."
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --progress-bar on --upgrade pip
	$(VENV)/bin/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

# --rerun-incomplete: after an interrupted run, `make demo` again redoes the jobs that were running
demo: $(STAMP)
	snakemake --cores $(CORES) --printshellcmds --rerun-incomplete demo

demo-reports: $(STAMP)
	snakemake --cores $(CORES) --printshellcmds --rerun-incomplete demo_reports

test: $(STAMP) system-packages
	pytest -n 2 --dist loadgroup

system-packages:
	sh scripts/system-packages.sh

lint: $(STAMP)
	ruff check .
	snakemake --lint
	snakefmt --check Snakefile workflow/rules

# The demo's files and no other region's (a region named demo_world2 keeps its own): its
# sources, results and maps, and its jobs' logs (scripts/clean_region.py, with this project's
# .venv wherever make runs).
clean-demo:
	$(HERE_PYTHON) $(HERE)scripts/clean_region.py demo
