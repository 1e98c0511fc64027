# The README's two commands are `make demo` and `make test`; both install what they need first.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install demo test lint sanity quick drills bench sandbox-down clean

install:
	@scripts/install.sh

# Starts the sandbox platform and runs the main jobs against it, under load (scripts/demo.sh).
demo: install
	scripts/demo.sh

test: install lint sanity
	$(PY) -m pytest tests --durations=15
	$(MAKE) drills

lint: install
	$(VENV)/bin/ruff check driver sandbox tests bench collections
	$(VENV)/bin/ruff format --check driver sandbox tests bench collections
	$(VENV)/bin/ansible-lint --profile production --offline

# ansible-test sanity on the emergency.ops collection (scripts/sanity.sh).
sanity: install
	scripts/sanity.sh

# Unit and emulator tests, no sandbox: about a minute.
quick: install
	$(PY) -m pytest -m quick

drills: install
	scripts/drills.sh

bench: install
	$(PY) -m bench.restart
	$(PY) -m bench.traffic

sandbox-down:
	$(PY) -m driver sandbox down

# Stops the sandbox and removes its state and its PostgreSQL home (in /var/tmp, see docs/sandbox.md).
clean:
	$(PY) -c 'from sandbox.platform import Sandbox; Sandbox().destroy()'
	rm -rf .sandbox incidents
