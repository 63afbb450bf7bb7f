#!/usr/bin/env bash
# The README's two commands, on a fresh machine or an old one:
#   bash deploy/local/dev.sh run     the hub on the embedded default: local Kafka (KRaft, jars from
#                                    Maven Central), topics from topics.yaml, the engine, a SQLite read model
#   bash deploy/local/dev.sh test    the schema gate, then every test (real Kafka, real PostgreSQL)
# Both first install what is missing: Java 17, Maven and PostgreSQL from Debian's packages, a venv
# in .venv with the project and its test extra. Extra arguments go to the worker or to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

setup() {
  local need=()
  command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
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
    exec .venv/bin/orderhub run "$@"
    ;;
  test)
    setup
    .venv/bin/orderhub schemas check
    # the tests start the local broker themselves if none runs; starting it here first makes a
    # failing download or start-up say so before any test runs
    started=""
    if [ -z "${ORDERHUB_BOOTSTRAP_SERVERS:-}" ] && ! .venv/bin/orderhub kafka status >/dev/null 2>&1; then
      started=yes
    fi
    [ -n "${ORDERHUB_BOOTSTRAP_SERVERS:-}" ] || .venv/bin/orderhub kafka up
    status=0
    .venv/bin/python -m pytest "$@" || status=$?
    if [ -n "$started" ]; then
      .venv/bin/orderhub kafka down || true
    fi
    exit $status
    ;;
  *)
    echo "usage: bash deploy/local/dev.sh run|test [args]" >&2
    exit 2
    ;;
esac
