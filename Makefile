# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Everything they need (virtualenv, Python packages, the Kafka broker's jars)
# is installed on first use and reused afterwards.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install kafka demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

kafka: $(STAMP)
	$(PY) -m deploy.kafka.launcher fetch

demo: install kafka
	$(VENV)/bin/fraudstream demo

test: install kafka
	$(PY) -m pytest

clean:
	rm -rf .fraudstream .pytest_cache
