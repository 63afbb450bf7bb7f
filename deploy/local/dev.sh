#!/usr/bin/env bash
# The README's two commands, on a fresh machine or an old one:
#   bash deploy/local/dev.sh run     the main job on the embedded default (`orderhub up`): local Kafka
#                                    (KRaft, jars from Maven Central), topics, the engine, a SQLite read
#                                    model, the CRM, ERP and MES connectors against local sandboxes
#   bash deploy/local/dev.sh test    the schema gate, then every test (real Kafka, real PostgreSQL, both
#                                    started here and stopped again on any exit)
#   bash deploy/local/dev.sh bench   the engine benchmark (bench/README.md), with the Quix peer installed
# Both first install what is missing: Java 17, Maven, PostgreSQL and Mosquitto (and, for the tests,
# Chromium) from Debian's packages, a venv in .venv with the project, its connectors, sandboxes and
# test extra. Extra arguments go to the worker or to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

setup() {
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
    echo "orderhub needs Python 3.11 or newer as python3; this one is $(python3 --version 2>&1)" >&2; exit 1; }
  local need=()
  java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ "${java_major:-0}" -ge 17 ] 2>/dev/null || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
  # the browser tests drive Debian's Chromium (Playwright, no browser download)
  [ "${1:-}" != test ] || [ -x /usr/bin/chromium ] || need+=(chromium)
  # the metrics tests: promtool checks and unit-tests the alert rules; a real Prometheus scrapes the hub
  [ "${1:-}" != test ] || [ -x /usr/bin/prometheus ] || need+=(prometheus)
  # the deploy tests render deploy/k8s with kubectl's built-in Kustomize (this kind of machine has it)
  [ "${1:-}" != test ] || command -v kubectl >/dev/null 2>&1 || echo "note: kubectl is missing; the deploy/k8s tests will say so" >&2
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from Debian's packages"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
}

command=${1:-}
shift || true
case "$command" in
  run)
    setup
    exec .venv/bin/orderhub up "$@"
    ;;
  test)
    setup test
    .venv/bin/orderhub schemas check
    # Kafka and PostgreSQL are started here, before any test, so a failing download or start-up
    # says so first; whatever this script started it stops again on any exit, failing or not.
    stop=()
    trap 'for c in "${stop[@]}"; do $c || true; done' EXIT
    if [ -z "${ORDERHUB_BOOTSTRAP_SERVERS:-}" ]; then
      .venv/bin/orderhub kafka status >/dev/null 2>&1 || stop+=(".venv/bin/orderhub kafka down")
      .venv/bin/orderhub kafka up
    fi
    if [ -z "${ORDERHUB_TEST_POSTGRES_URL:-}" ]; then
      # a throwaway server in a folder the postgres user can reach (root's home is closed to it)
      pg_state=$(mktemp -d /tmp/orderhub-test-pg-XXXXXX)
      chmod 755 "$pg_state"
      stop+=("env ORDERHUB_STATE_DIR=$pg_state .venv/bin/orderhub postgres down" "rm -rf $pg_state")
      pg_port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      ORDERHUB_TEST_POSTGRES_URL=$(ORDERHUB_STATE_DIR=$pg_state .venv/bin/orderhub postgres up --port "$pg_port")
      export ORDERHUB_TEST_POSTGRES_URL
    fi
    status=0
    .venv/bin/python -m pytest "$@" || status=$?
    exit $status
    ;;
  bench)
    setup
    exec .venv/bin/orderhub bench engine "$@"
    ;;
  *)
    echo "usage: bash deploy/local/dev.sh run|test|bench [args]" >&2
    exit 2
    ;;
esac
