# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Everything they need (virtualenv, Python packages, the Kafka broker's jars,
# and for the tests Debian's prometheus) is installed on first use and reused.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install kafka prometheus demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

kafka: $(STAMP)
	$(PY) -m deploy.kafka.launcher fetch

prometheus:
	bash deploy/install-prometheus.sh

demo: install kafka
	$(VENV)/bin/fraudstream demo

test: install kafka prometheus
	$(PY) -m pytest

clean:
	rm -rf .fraudstream .pytest_cache
