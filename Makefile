# Two entry points for a newcomer: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PIP := $(VENV)/bin/pip

.PHONY: setup browser test demo clean

setup: $(STAMP)

# The web report's browser test drives Debian's headless Chromium; installed (as root) only when missing.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium chromium-driver; \
	else echo "make setup: chromium and chromium-driver are missing; as root: apt-get install -y chromium chromium-driver" >&2; exit 1; fi

# Reinstall only when the dependency list changes, so a second `make setup` takes seconds.
# pip compiles what it installs, not the editable package: compileall does, for hosts that set
# PYTHONDONTWRITEBYTECODE (each of the suite's processes would compile harness/ again).
# numba compiles the CPU kernels (wavelets, integer entropy path, rANS) on first use and caches
# them beside the package: a coding in each precision compiles most of them here, so that a
# user's first `harness compress` takes ~9 s instead of ~22 s (~5 s warm). The rest are compiled
# for types that depend on the data (rANS's symbol widths, planes small enough for the cache).
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q -e '.[test]'
	$(VENV)/bin/python -m compileall -q harness
	$(VENV)/bin/harness init-model --variant tiny --out $(VENV)/kernels.pt > /dev/null
	$(VENV)/bin/harness compress datasets/kodak/kodim23.png -m $(VENV)/kernels.pt -o $(VENV)/kernels.3dmw --precision bf16 > /dev/null
	$(VENV)/bin/harness decompress $(VENV)/kernels.3dmw -m $(VENV)/kernels.pt -o $(VENV)/kernels.png --precision fp32 > /dev/null
	rm $(VENV)/kernels.pt $(VENV)/kernels.3dmw $(VENV)/kernels.png
	touch $(STAMP)

# Two workers, one test file each at a time: much of the suite waits on Ray, subprocesses' start-up
# and sockets, and the other worker's tests run meanwhile. --no-loadscope-reorder keeps the files in
# tests/conftest.py's order (the longest first); by default pytest-xdist hands out the files with
# the most tests first, which left the longest file (test_train_sweep.py) to start mid-run.
test: setup browser
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# The README demo: the whole pipeline at demo scale (schedule/demo.toml; <15 min on 2 cores):
# shards from ../shared/data/photos, two learned λ sweeps, the Kodak leaderboard, the report.
demo: setup
	$(VENV)/bin/harness rerun --plan schedule/demo.toml

clean:
	rm -rf $(VENV) .pytest_cache
