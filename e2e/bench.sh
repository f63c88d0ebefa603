#!/usr/bin/env bash
# `make bench`: pgwarden and real Patroni, same apiserver, same PostgreSQL, same scenarios.
# Writes BENCHMARKS.md. Patroni comes from PyPI into a venv of Debian's python3 (the postgres
# user cannot execute a python under root's home).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
VENV=$PGWARDEN_CACHE/patroni-venv
PATRONI_PIN=${PATRONI_PIN:-patroni[kubernetes,psycopg3]==4.1.5}
phase "patroni venv"
if [ ! -x "$VENV/bin/patroni" ]; then
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "$PATRONI_PIN" psycopg-binary
fi
"$VENV/bin/patroni" --version
chmod -R o+rX "$VENV"
# The trap only once this script brought the test bed up: when `up` refuses (a test bed, the
# demo's perhaps, is already running) nothing of the user's is torn down.
testbed_up --control-plane
trap '"$CLUSTER" down' EXIT
phase "benchmark"
cd "$REPO_DIR"
PATRONI_VENV=$VENV cargo test --release --locked --test bench -- --ignored --nocapture
phase_end
