# Two commands matter: `make demo` and `make test`. Both go through `make setup`, which creates
# .venv when it is missing and installs rlalign with its dev extra, the torch build pinned in
# constraints.txt. Other tools rely on .venv/bin/python and .venv/bin/rlalign existing after it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
LINTED := src tests bench examples docs/_hooks

.PHONY: setup test test-fast test-browser demo goals goals-car goals-quick lint format bench clean docs docs-serve mutation

setup: $(STAMP)

# Re-installs when the dependency list or the pin changes; otherwise a no-op.
# uv installs the same packages as pip from the same constraints, in seconds rather than minutes
# (a fresh .venv on a 2-core AMD EPYC, empty caches: 78 s with the bytecode compiled, 15 s
# without, against pip's 3 min 41 s, the same 182 packages at the same versions); pip does the
# work where uv cannot be installed or fails. uv reads no pip configuration, so pip's find-links
# (a folder of local wheels, such as the CPU build of torch that constraints.txt pins) is handed
# to it. --compile-bytecode: uv leaves the .pyc files to the first import, which writes none where
# PYTHONDONTWRITEBYTECODE is set (as in many containers and CI images), so every process compiled
# torch and transformers again: 19 s of CPU to import them against 8 s, in each of the suite's
# hundred-odd Python processes.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@links="$${PIP_FIND_LINKS:-$$($(BIN)/python -m pip config get global.find-links 2>/dev/null)}"; \
	flags=$$(for d in $$links; do printf -- '--find-links %s ' "$$d"; done); \
	if $(BIN)/python -m pip install --quiet uv \
	  && echo "uv pip install --compile-bytecode -c constraints.txt $$flags-e '.[dev]'" \
	  && $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt $$flags -e '.[dev]'; then :; \
	else \
	  echo "uv could not install; pip install -c constraints.txt -e '.[dev]'"; \
	  $(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'; \
	fi
	@touch $(STAMP)

# `test` installs the headless browser and the terminal (tmux) the interface tests drive first
# when it can (a failure to install is reported, the other tests still run, and those tests
# fail saying what to do). The tests
# use one thread each, so they run on one worker process per core (pytest-xdist), a module at a
# time on one worker, so that a module-scoped fixture (a torchrun launch, the site's build) is
# built once.
# --no-loadscope-reorder: modules go out in collection order (tests/conftest.py puts the longest
# first), not sorted by their number of tests, which would start a one-test ten-minute module last.
XDIST := -n auto --dist loadscope --no-loadscope-reorder

test: setup
	-@scripts/install_test_browser.sh
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# The edit-test loop: everything not marked slow (end-to-end runs, torchrun, kill -9, notebooks).
test-fast: setup
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# The headless browser and tmux the interface tests need (Debian's; root or passwordless sudo);
# no test installs software itself.
test-browser:
	scripts/install_test_browser.sh

demo: setup
	$(BIN)/rlalign demo

# The README's claims, checked on fresh runs (docs/results.md): `rlalign demo` for each world
# seed in SEEDS, asserting every goal of the demo from its report.json, and the default car run,
# asserting PPO above every baseline with collisions <= 5%. Runs go to build/goals, as many at a
# time as the cores hold (the demo on the threads its num_threads=auto picks, two on a 2-core
# machine; the car and the quick demo on one). `make goals SEEDS=0-9` also rewrites the
# seed table that README.md and docs/results.md quote; it passes when 9 of the 10 meet every
# goal. `make goals-car` is the car alone (4.5 to 24 minutes on the 2-core machines measured:
# docs/results.md, docs/testing.md). `make goals-quick` (CI, on the CPU kinds below) is the
# car beside `rlalign demo --quick`, checked on what its fewer steps can show (SFT far above the
# pretrained model, RL above SFT on reward): `make test` runs the demo at the smallest sizes that
# exercise every stage, so the learning of the whole flow is checked here.
# CI runs `make goals` where the CPU is AVX-512 BF16 without AMX, the kind whose seed-0 card is
# measured to meet every goal, and `make goals-quick` on the other kinds (see .ci/run).
SEEDS ?= 0
goals: setup
	$(BIN)/python -m rlalign.goals --seeds $(SEEDS) --out build/goals $(GOALS_ARGS)

goals-car: setup
	$(BIN)/python -m rlalign.goals --no-demo --out build/goals $(GOALS_ARGS)

goals-quick: setup
	$(BIN)/python -m rlalign.goals --quick --seeds $(SEEDS) --out build/goals-quick $(GOALS_ARGS)

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: setup
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

# The documentation site, into build/site. `docs` executes every notebook of examples/ at its
# normal settings (11.5 minutes on the shared 2-core CPU) and fails on any warning, broken link or
# missing image. `docs-serve` serves with live reload and, to rebuild in seconds, renders the
# notebooks without running them (RLALIGN_DOCS_EXECUTE=true make docs-serve runs them too).
docs: setup
	NO_MKDOCS_2_WARNING=1 RLALIGN_TUTORIAL_OUT=build/docs-runs $(BIN)/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 RLALIGN_TUTORIAL_OUT=build/docs-runs RLALIGN_DOCS_EXECUTE=$${RLALIGN_DOCS_EXECUTE:-false} $(BIN)/mkdocs serve

# Mutation testing (docs/testing.md), not part of `make test`: mutmut plants small bugs in the RL
# core and in the loop's gradient accumulation and scaling, one at a time, and runs the fast tests
# that guard them (tests/rl, tests/train/test_loop*.py); a mutant no test fails on "survived".
# 5-10 minutes on 2 cores; `mutmut results` lists survivors, `mutmut show NAME` one diff.
MUTANTS := 'rlalign.rl.*' 'rlalign.train.loop.x*Trainer*train_step__mutmut_*' \
	'rlalign.train.loop.x*_Window*add__mutmut_*' 'rlalign.train.loop.x*Trainer*_window_row__mutmut_*'
mutation: setup
	@test -x $(BIN)/mutmut || $(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,mutation]'
	nice $(BIN)/mutmut run $(MUTANTS)
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis mutants
