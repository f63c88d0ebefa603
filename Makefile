# pgwarden — `make test` is everything CI runs; `make demo` brings up a cluster to look at.
# Build caches live outside the clone, in one directory ($(CACHE)), so warm runs are fast.

CACHE ?= $(or $(PGWARDEN_CACHE),/var/cache/pgwarden)
export PGWARDEN_CACHE := $(CACHE)
export CARGO_TARGET_DIR ?= $(CACHE)/cargo-target
TARGET := x86_64-unknown-linux-gnu
RELEASE_BIN := $(CARGO_TARGET_DIR)/$(TARGET)/release/pgwarden
TIMED := e2e/timed

.PHONY: e2e bench bench-backups integration test lint fmt-check clippy unit simulate crds chart-check release static-check smoke testbed-up testbed-down demo image fmt nodes bench-nodes

## Everything CI runs, in order of speed: lint, unit tests (CRD drift included), the static
## binary check, the integration tier (agents against a real apiserver and PostgreSQL), the
## test-bed smoke test on a real single-node Kubernetes, the chart checks (helm is built by the
## test bed), the end-to-end tier (the operator installed by helm, real pods), then the node tier
## (three nodes; a node killed, frozen, cut off and drained).
test: lint unit static-check integration smoke chart-check monitoring-check e2e nodes

lint: fmt-check clippy

fmt-check:
	@$(TIMED) "cargo fmt --check" cargo fmt --all -- --check

fmt:
	cargo fmt --all

clippy:
	@$(TIMED) "cargo clippy" cargo clippy --all-targets --locked -- -D warnings

## Unit tests, then the simulation's UNIT_SEEDS schedules with its report (schedules per second,
## the invariants checked).
UNIT_SEEDS ?= 2000
unit:
	@$(TIMED) "unit tests" cargo test --all-targets --locked -- --skip simulated_fault_schedules
	@PGWARDEN_SIM_SEEDS=$(UNIT_SEEDS) $(TIMED) "simulation ($(UNIT_SEEDS) schedules)" \
		cargo test --locked --test simulate simulated_fault_schedules -- --nocapture

## The deterministic simulation of the HA core (tests/simulate.rs; `make unit` runs 2000 schedules):
## SEEDS schedules from FIRST, in release mode. A failing seed replays with FIRST=seed SEEDS=1.
SEEDS ?= 10000
FIRST ?= 0
simulate:
	@PGWARDEN_SIM_SEEDS=$(SEEDS) PGWARDEN_SIM_FIRST=$(FIRST) $(TIMED) "simulation ($(SEEDS) schedules)" \
		cargo test --release --locked --test simulate -- --nocapture

## Regenerate crds/ from the Rust types (one file per CRD), and the chart's copies
## (charts/pgwarden/crds/) from them. Through temporary files, so a failed build leaves every file
## as it was.
CRD_PLURALS := postgresclusters postgresbackups
crds:
	cargo build --quiet --locked --bin pgwarden
	for p in $(CRD_PLURALS); do \
		cargo run --quiet --locked --bin pgwarden -- crd $$p > crds/.pgwarden.io_$$p.yaml.tmp \
			|| { rm -f crds/.pgwarden.io_$$p.yaml.tmp; exit 1; }; \
	done
	for p in $(CRD_PLURALS); do \
		mv crds/.pgwarden.io_$$p.yaml.tmp crds/pgwarden.io_$$p.yaml; \
		cp crds/pgwarden.io_$$p.yaml charts/pgwarden/crds/pgwarden.io_$$p.yaml; \
	done

## Static checks of the Helm chart: lint --strict, both RBAC shapes render, the schema refuses bad
## values, chart version = crate version, the chart's CRD = crds/ (needs the test bed's helm).
chart-check:
	@$(TIMED) "helm chart checks" e2e/chart-check.sh

## Static checks of monitoring/: promtool check rules + test rules (every alert firing and not),
## the Grafana dashboard (valid JSON, every query parses), the chart's copies identical, and helm
## lint with the PrometheusRule and dashboard enabled (needs promtool and the test bed's helm).
.PHONY: monitoring-check
monitoring-check:
	@$(TIMED) "monitoring checks" e2e/monitoring-check.sh

## The release binary, statically linked so it runs in images it was not built for. The explicit
## --target keeps build scripts and proc macros dynamic.
release:
	@RUSTFLAGS="-C target-feature=+crt-static" $(TIMED) "cargo build --release (static)" \
		cargo build --release --locked --target $(TARGET) --bin pgwarden --bin kubectl-pgwarden

## Prove the release binary needs no libc of its own: run it in a rootfs that has nothing else.
static-check: release
	@$(TIMED) "static binary in an empty rootfs" e2e/static-check.sh $(RELEASE_BIN)

## Integration tier: agents as processes against a real kube-apiserver and PostgreSQL 15.
integration:
	@$(TIMED) "integration tests (agents, real apiserver, real PostgreSQL)" e2e/integration.sh

smoke: release
	@$(TIMED) "test-bed smoke test" e2e/smoke.sh

testbed-up:
	e2e/cluster up

testbed-down:
	e2e/cluster down

image: release
	e2e/cluster image build pgwarden

## Bring up the local Kubernetes (unless KUBECONFIG names a cluster) and show it.
demo: release
	@e2e/demo.sh

## End-to-end tier: the full test bed, the chart installed with helm, the scenarios in tests/e2e.rs.
e2e: release
	@$(TIMED) "end-to-end tests (operator, chart, real pods)" e2e/e2e.sh

## Node tier: three nodes on this machine, a node killed, frozen, cut off and drained under the
## primary, and a replica's node drained (tests/nodes.rs).
nodes: release
	@$(TIMED) "node tests (three nodes, real pods)" e2e/nodes.sh

## The node rows of BENCHMARKS.md: every node scenario NODE_TRIALS times (5) on three nodes.
bench-nodes: release
	@NODES_FILTER=benchmark_node_faults $(TIMED) "node benchmark (three nodes)" e2e/nodes.sh

## Benchmarks: pgwarden beside real Patroni (PyPI, in a venv under the cache) on one apiserver;
## writes BENCHMARKS.md.
bench:
	@$(TIMED) "benchmarks" e2e/bench.sh

## The backup rows of BENCHMARKS.md: a 1 GB database backed up, 11 minutes of steady writes,
## restored to the latest state and 10 minutes back, on the one-node test bed (~25 min).
bench-backups: release
	@E2E_TESTS="--test bench_backups" $(TIMED) "backup benchmark (one node)" e2e/e2e.sh
