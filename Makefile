# The two set-up commands of the README: `make demo` and `make test`.
# Both install everything they need (apt system libraries when missing,
# pinned Python packages into .venv/) before doing their job.

VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
HOME_DIR ?= var

.PHONY: install demo test lint bench clean

$(STAMP): requirements.lock pyproject.toml .ci/system-deps.sh
	bash .ci/system-deps.sh
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/invoices run sample_data/extract --home $(HOME_DIR)

test: install lint
	$(BIN)/invoices templates check
	$(BIN)/python -m pytest -q -n 2 --durations=15

lint: install
	$(BIN)/ruff check pipeline flows tests bench sample_data
	$(BIN)/mypy pipeline flows

bench: install
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/run.py --invoices 2000

clean:
	rm -rf $(VENV) var
