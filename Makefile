# Entry points: `make run`, `make test`.  `.venv` is built once (a stamp file
# records it) and rebuilt when pyproject.toml changes.  torch==2.13.0 comes from
# the local CPU wheel that pip's find-links points at.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: venv run test test-slow bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[test]'
	touch $@

run: venv
	$(VENV)/bin/rtnclock run audio_stream --out runs/audio_stream.zarr --overwrite

test: venv
	$(VENV)/bin/python -m pytest -q

# pytest exits 5 when it collects no test: no slow tests yet is not a failure.
test-slow: venv
	$(VENV)/bin/python -m pytest -q -m slow || [ $$? -eq 5 ]

bench: venv
	@set -e; for script in benchmarks/*.py; do \
		[ -e "$$script" ] || { echo "no benchmarks"; break; }; \
		echo "== $$script"; $(VENV)/bin/python "$$script"; \
	done
