# RackWarden: `make demo` and `make test` set up everything they need on a fresh Debian machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEB_PACKAGES := python3-venv python3-dev gcc libc6-dev libyaml-dev snmpd snmp openssh-server openssh-client prometheus prometheus-alertmanager \
	tshark postgresql iproute2 iputils-ping procps tcpdump tcpreplay chromium chromium-driver \
	fonts-wqy-microhei
DEB_STAMP := $(VENV)/.deb-ok
PY_STAMP := $(VENV)/.py-ok

.PHONY: deps test test-unit test-lab test-sim typecheck demo demo-stop bench fuzz soak lint clean install

deps: $(DEB_STAMP) $(PY_STAMP)

# Debian packages: installed only when one is missing, so repeat runs cost nothing.
$(DEB_STAMP): Makefile
	@mkdir -p $(VENV)
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

# setuptools 74.1 is the first to read pyproject's ext-modules (the SPAN ring walker): the venv
# has it too, because scripts/install.sh may build the wheel without build isolation.
$(PY_STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip 'setuptools>=74.1'
	$(PIP) install -q -e '.[test]'
	@touch $@

# The lab's namespaces and ports have fixed names: two lab runs on one machine would collide,
# so a second `make test` waits for the first. Inside one run, each test file builds its own lab
# (its own lab id, free loopback ports, a private PostgreSQL), so files run side by side: the
# lab files mostly wait on real time (polls, grace periods), the unit files use the CPU.
TEST_WORKERS ?= 2
LAB_LOCK := /tmp/rackwarden-lab.lock
test: deps typecheck
	$(VENV)/bin/ruff check agent drivers policies tests bench fuzz
	flock $(LAB_LOCK) $(PY) -m pytest -q -p no:cacheprovider --durations=25 -n $(TEST_WORKERS) --dist loadfile tests

# mypy --strict on the package as it installs (rackwarden.agent, .drivers, .policies): a tree of
# links with the installed layout, so cross-package imports are typed, not Any.
MYPY_TREE := $(VENV)/mypy-tree
typecheck: deps
	@rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)/rackwarden
	@for d in agent drivers policies; do ln -s $(CURDIR)/$$d $(MYPY_TREE)/rackwarden/$$d; done
	cd $(MYPY_TREE) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml \
	  --cache-dir $(CURDIR)/$(VENV)/.mypy_cache --namespace-packages --explicit-package-bases -p rackwarden

# The whole agent on a simulated switch with a fake clock: no root, no network, seconds.
test-sim: deps
	$(PY) -m pytest -q -p no:cacheprovider tests/sim

test-unit: deps
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: deps
	$(VENV)/bin/ruff check agent drivers policies tests bench

demo: deps
	$(PY) -m tests.lab.demo

demo-stop: deps
	$(PY) -m tests.lab.demo --stop

# A month in a few minutes: 30 simulated days through the whole agent, then the offline audit
# (tests/sim/soak.py); `make test` runs a 3-day one. Prints figures and one JSON line.
SOAK_DAYS ?= 30
soak: deps
	$(PY) -m tests.sim.soak --days $(SOAK_DAYS)

# Debian packages only `make bench` needs (the peer run against FastNetMon; netsniff-ng's
# trafgen, the SPAN bench's sender): make test never installs them. The fastnetmon package
# enables fastnetmon.service, whose packaged config reports usage home: the bench runs its own
# copy, so the service is disabled. The stamp is redone when this file changes (a new package).
BENCH_DEB_PACKAGES := fastnetmon netsniff-ng
BENCH_DEB_STAMP := $(VENV)/.bench-deb-ok
$(BENCH_DEB_STAMP): $(DEB_STAMP) Makefile
	@missing=""; for p in $(BENCH_DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for make bench:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  systemctl disable --now fastnetmon 2>/dev/null || true; \
	fi
	@touch $@

# Each benchmark prints its figures and ends with one JSON line.
bench: deps $(BENCH_DEB_STAMP)
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Coverage-guided fuzzing (atheris) of the sFlow decoders, the SNMP codec, the C YAML composer
# and the SPAN batch path; each prints executions, crashes and RSS (fuzz/_harness.py).
FUZZ_SECONDS ?= 600
fuzz: deps
	$(PY) fuzz/sflow_fuzz.py -max_total_time=$(FUZZ_SECONDS)
	$(PY) fuzz/snmp_ber_fuzz.py -max_total_time=$(FUZZ_SECONDS)
	$(PY) fuzz/yaml_compose_fuzz.py -max_total_time=$(FUZZ_SECONDS)
	$(PY) fuzz/span_frames_fuzz.py -max_total_time=$(FUZZ_SECONDS)

# Installs under /opt/rackwarden, /etc/rackwarden and the systemd unit (scripts/install.sh --help).
install: deps
	scripts/install.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
