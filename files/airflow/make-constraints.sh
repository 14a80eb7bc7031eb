#!/usr/bin/env bash
# Regenerate files/airflow/constraints-<AIRFLOW_VERSION>-py<PYVER>.txt from a *tested* install.
#
# usage: files/airflow/make-constraints.sh [AIRFLOW_VERSION] [PYTHON]
#        e.g. files/airflow/make-constraints.sh 3.3.2 python3.11
#             files/airflow/make-constraints.sh 3.3.2 python3.12
#
# Why: Airflow's official constraints files live on GitHub, which the lab cannot reach, and an
# unpinned `pip install apache-airflow[celery,postgres]==3.3.2` resolves celery 5.7.0, which breaks
# apache-airflow-providers-celery 3.26.0 (worker dies: ImportError: cannot import name 'retry' from
# 'celery.backends.database'). So we pin celery<5.7, install into a throwaway venv, prove that the
# CLI and the Celery executor import, and freeze that set.
set -euo pipefail

AIRFLOW_VERSION="${1:-3.3.2}"
PYTHON="${2:-python3.11}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
OUT="$HERE/constraints-${AIRFLOW_VERSION}-py${PYVER}.txt"
# Extra requirements that must be in the frozen set (keep in sync with fabfile/wheelhouse.py).
REQS=(
  "apache-airflow[celery,postgres,statsd]==${AIRFLOW_VERSION}"
  "apache-airflow-providers-fab"
  "apache-airflow-providers-standard"
  "celery<5.7"
  "async-timeout>=4.0.3"
  "uv"
)
# Airflow 3.2.x leaves cadwyn and fastapi unbounded; cadwyn 9 or fastapi 0.165 fail the Execution API's schema at api-server start
# (pydantic: "Model 'TITerminalStatePayload' needs a discriminator field"). 3.3.x pins them itself.
case "$AIRFLOW_VERSION" in 3.2.*) REQS+=("cadwyn<8" "fastapi<0.137") ;; esac

WORK="$(mktemp -d /tmp/airflow-constraints.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
# A machine-wide pip constraint (pip config `global.constraint`) must not leak into the frozen set.
export PIP_CONSTRAINT=/dev/null  # an empty value does not override the config file; /dev/null does

"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "${REQS[@]}"

# Prove it works before freezing.
export AIRFLOW_HOME="$WORK/home"
mkdir -p "$AIRFLOW_HOME"
"$WORK/venv/bin/airflow" version
"$WORK/venv/bin/python" -c 'import airflow.providers.celery.executors.celery_executor' 2>/dev/null
"$WORK/venv/bin/python" -c 'import airflow.providers.fab.auth_manager.fab_auth_manager, redis, kombu.transport.redis, psycopg2, statsd'
# The api-server's app (UI, REST and Execution API) must build: that is where a dependency too new fails.
"$WORK/venv/bin/python" -c 'from airflow.api_fastapi.app import create_app; create_app()' >/dev/null

{
  echo "# Constraints for apache-airflow==${AIRFLOW_VERSION} on Python ${PYVER} (airflow-ha)."
  echo "# Generated $(date -u +%Y-%m-%d) by files/airflow/make-constraints.sh from a tested install:"
  echo "#   python${PYVER} -m venv V && V/bin/pip install ${REQS[*]}"
  echo "#   then: airflow version; python -c 'import airflow.providers.celery.executors.celery_executor'"
  echo "#   then: pip freeze (below)."
  echo "# celery is pinned <5.7: celery 5.7.0 breaks apache-airflow-providers-celery 3.26.0"
  echo "#   (ImportError: cannot import name 'retry' from 'celery.backends.database')."
  case "$AIRFLOW_VERSION" in 3.2.*) echo "# cadwyn<8, fastapi<0.137 (the versions 3.3 resolves): newer ones break 3.2's Execution API (api-server exits)." ;; esac
  echo "#   then: python -c 'from airflow.api_fastapi.app import create_app; create_app()'"
  echo "# async-timeout: redis-py needs it on Python < 3.11.3 (Debian 12 ships 3.11.2)."
  echo "# Official constraints (if reachable): https://raw.githubusercontent.com/apache/airflow/constraints-${AIRFLOW_VERSION}/constraints-${PYVER}.txt"
  "$WORK/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v -E '^(pip|setuptools|wheel)=='
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT ($(grep -c '==' "$OUT") pins)"
