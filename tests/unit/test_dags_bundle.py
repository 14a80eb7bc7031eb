"""The DAG release holds the users' DAGs only; the HA test DAGs only with `ha_test_dags` (issue #20, item 4)."""

from __future__ import annotations

import io
import tarfile

from fabfile import dags
from fabfile.components import load_inventory as load


def _names(inv) -> set:
    _, data = dags.bundle(*dags.sources(inv))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return set(tar.getnames())


def _inventory(tmp_path, extra=""):
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "mine.py").write_text("# a user's DAG\n")
    (tmp_path / "dags" / ".gitkeep").write_text("")
    (tmp_path / "hosts.yaml").write_text(
        f"cluster:\n  dags_dir: dags\n{extra}hosts:\n"
        "  n1: {roles: [redis, sentinel, postgres, api_server, scheduler, dag_processor, worker, nginx]}\n")
    return load(tmp_path / "hosts.yaml")


def test_default_release_holds_only_the_users_dags(tmp_path):
    assert _names(_inventory(tmp_path)) == {"mine.py"}


def test_ha_test_dags_switch_adds_them_under_their_own_folder(tmp_path):
    names = _names(_inventory(tmp_path, "  ha_test_dags: true\n"))
    assert "mine.py" in names
    assert {"airflow_ha_test/ha_load.py", "airflow_ha_test/test_ha_celery_workers.py"} <= names


def test_shipped_default_dag_folder_holds_no_test_dags():
    assert not list((dags.TEST_DAGS.parent / "dags").rglob("*.py"))
