# Thin wrapper around Meson; the real build is meson.build.
#   make            build everything (installs missing Debian packages first)
#   make up         start a local cluster with a sample function (Ctrl-C stops it)
#   make test       build and run every test; ends with "N passed, N failed"
#   make dst SEEDS=N   deterministic simulation of the cores over N seeds (docs/testing.md)
#   make test SANITIZE=address,undefined   same suite with sanitizers
#   make image      the dirigent-fn OCI image in build/images/dirigent-fn
#   make bench      benchmarks (bench/README.md); make fmt / make lint / make clean
#   make plots      PNGs from the benchmark CSVs in bench/results/ (scripts/plots.py)
#   make install    binaries, systemd units, configs in /etc/dirigent (PREFIX, DESTDIR)
SHELL := /bin/bash
SANITIZE ?=
WERROR ?= $(if $(CI),true,false)
BUILD ?= $(if $(SANITIZE),build-san,build)
MESON_OPTS := -Dwerror=$(WERROR) --buildtype=debugoptimized
ifneq ($(SANITIZE),)
MESON_OPTS += -Db_sanitize=$(SANITIZE) -Db_lundef=false
endif
TEST_TIMEOUT_MULT ?= $(if $(SANITIZE),3,1)

.PHONY: all deps configure image up test dst bench plots fmt lint clean

all: configure
	ninja -C $(BUILD)

deps:
	@scripts/deps.sh

# The dirigent-fn OCI image (an OCI layout, tag latest) for the worker's oci runtime; every
# build makes it (images/meson.build), this target names it.
image: all
	@test -d $(BUILD)/images/dirigent-fn && echo "image: oci:$(BUILD)/images/dirigent-fn:latest"

# A local cluster in the foreground (control plane, data plane, worker) with the sample
# function `hello`; Ctrl-C stops it. RUNTIME=oci|process|emulated (default auto: oci as root
# with crun, else process).
up: all
	$(BUILD)/dirigent up --runtime $(or $(RUNTIME),auto) --state-dir $(or $(STATE_DIR),data/local)

# Reconfigure only when the options changed (kept in $(BUILD)/.opts).
configure: deps
	@if [ ! -f $(BUILD)/build.ninja ]; then \
	  meson setup $(BUILD) $(MESON_OPTS); \
	elif [ "$$(cat $(BUILD)/.opts 2>/dev/null)" != "$(MESON_OPTS)" ]; then \
	  meson setup --reconfigure $(BUILD) $(MESON_OPTS); \
	fi; echo "$(MESON_OPTS)" > $(BUILD)/.opts

test: all
	@rc=0; meson test -C $(BUILD) --num-processes 2 --print-errorlogs -t $(TEST_TIMEOUT_MULT) || rc=$$?; \
	  /usr/bin/python3 tests/summary.py $(BUILD)/meson-logs/testlog.json || rc=1; exit $$rc

# Deterministic simulation tests of the cores (tests/dst/dst.c, docs/testing.md): SEEDS seeds
# from SEED, STEPS steps each, with the fault classes FAULTS (all: the known failures too);
# DST_ARGS adds options (e.g. --no-dp-lists, --trace).
SEED ?= 1
SEEDS ?= 200
STEPS ?= 2000
FAULTS ?= crash-worker,crash-dp,failover,exit,partition,loss,slow,clock
dst: all
	$(BUILD)/tests/dst --seed $(SEED) --seeds $(SEEDS) --steps $(STEPS) --faults $(FAULTS) $(DST_ARGS)

bench: all
	bench/run_all.sh $(BENCH_ARGS)

# The figures of bench/README.md: bench/results/*.csv -> bench/results/*.png (a plot whose
# CSV is missing is skipped with a note). Needs python3-matplotlib (scripts/deps.sh).
plots: deps
	/usr/bin/python3 scripts/plots.py --dir bench/results

fmt: deps
	clang-format -i $$(git ls-files '*.c' '*.h')

lint: configure
	ninja -C $(BUILD)
	python3 tests/check_includes.py
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --inline-suppr --suppress=missingIncludeSystem --suppress=unknownMacro -I include lib src
	clang-tidy -p $(BUILD) --quiet $$(git ls-files 'lib/*.c' 'src/*.c')

clean:
	rm -rf build build-san

# Install the daemons, the CLI, the dirigent-fn image, the systemd units (control_plane,
# data_plane, worker_node.service) and the example configs (into $(SYSCONFDIR)/dirigent only
# where no config is yet: a reinstall keeps edited ones). PREFIX and DESTDIR as usual:
#   make install                      binaries in /usr/local/bin, configs in /etc/dirigent
#   make install PREFIX=/usr DESTDIR=/tmp/pkg
# Installing sets the build's prefix (meson configure), so the units name the installed paths.
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
.PHONY: install uninstall
install: all
	meson configure $(BUILD) -Dprefix=$(PREFIX) -Dsysconfdir=$(SYSCONFDIR)
	meson install -C $(BUILD) $(if $(DESTDIR),--destdir $(abspath $(DESTDIR)))
	@echo "install: next, on each host: docs/operations.md, \"Install and run as services\""

# Removes what `make install` installed, except the configs in $(SYSCONFDIR)/dirigent.
uninstall:
	ninja -C $(BUILD) uninstall
