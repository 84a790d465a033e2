# Two commands are the whole set-up: `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cxrlab-installed
# The torch build of the course machines; override on other platforms, e.g.
#   make test TORCH="torch torchvision"
TORCH ?= torch==2.14.1 torchvision==0.29.1
export MPLBACKEND ?= Agg

.PHONY: install demo test test-unit test-notebooks test-browser notebooks bench clean help

help:
	@echo "make demo   - create .venv if needed, write the synthetic hospitals and a gallery to demo_out/"
	@echo "make test   - create .venv if needed, run unit tests and every notebook (nbval, ci profile)"
	@echo "make notebooks [NB=02] - sync each notebooks/NN_*.py source into its .ipynb and execute it (ci profile)"
	@echo "make bench  - speed figures as JSON (bench/results.json)"
	@echo "make test-browser - notebook 05's explorer in JupyterLab + headless Chromium (apt-get install chromium chromium-driver)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,lab]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	CXRLAB_PROFILE=$${CXRLAB_PROFILE:-ci} $(PY) -m cxrlab.demo --out demo_out

# CI-safe: ci profile, no progress bars, no widget noise, kernel of the current env
test: test-unit test-notebooks

test-unit: $(STAMP)
	CXRLAB_PROFILE=ci CXRLAB_PROGRESS=0 $(PY) -m pytest tests -q -p no:cacheprovider

test-notebooks: $(STAMP)
	CXRLAB_PROFILE=ci CXRLAB_PROGRESS=0 CXRLAB_HOME=$(CURDIR)/.cxrlab $(PY) -m pytest -q -p no:cacheprovider \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=900 notebooks/

# Real browser: JupyterLab on 127.0.0.1 + Debian's headless chromium (skips when it is missing);
# screenshots in browser_artifacts/. Not part of `make test`: CI runs it where chromium installs.
test-browser: $(STAMP)
	CXRLAB_BROWSER=1 CXRLAB_PROFILE=ci CXRLAB_PROGRESS=0 CXRLAB_HOME=$(CURDIR)/.cxrlab $(PY) -m pytest \
		tests/browser -q -p no:cacheprovider -rs

# Notebook sources are the jupytext files notebooks/NN_name.py (percent format); the stored
# .ipynb holds the same cells plus the outputs of a first run under the ci profile, from an
# empty CXRLAB_HOME. `make notebooks NB=03` rebuilds one. tests/test_notebook_sources.py fails
# when a committed .ipynb and its source disagree.
NB ?= [0-9][0-9]
notebooks: $(STAMP)
	@set -e; for src in notebooks/$(NB)_*.py; do \
	  nb=$${src%.py}.ipynb; home=$(CURDIR)/.nbhome; rm -rf $$home; echo "== $$nb"; \
	  $(VENV)/bin/jupytext --quiet --to ipynb --update --output $$nb $$src; \
	  (cd notebooks && CXRLAB_PROFILE=ci CXRLAB_PROGRESS=0 CXRLAB_HOME=$$home \
	    $(abspath $(PY)) -m jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 $$(basename $$nb)); \
	  rm -rf $$home; done

bench: $(STAMP)
	$(PY) -m cxrlab bench --out bench/results.json

clean:
	rm -rf demo_out .cxrlab .pytest_cache browser_artifacts
