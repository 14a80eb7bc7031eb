"""Spec tests of pgBackRest (fabfile/backup.py), planned offline: assertions on every repository mode. The
plans with a dedicated repository host (Debian 12, EL9) are diff goldens against the same layout without it
(test_spec_goldens.py: backup-*.diff), so layouts without a repository provably plan nothing of it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fabfile import backup
from fabfile.components import load_inventory
from fabfile.core import inventory
from fabfile.core.errors import UserError
from fabfile.core.facts import platform_from_os_release
from tests.spec.plans import deploy_plan

pytestmark = pytest.mark.spec

HERE = Path(__file__).resolve().parent


def os_release(name: str) -> str:
    return (HERE / "os-release" / name).read_text()


@pytest.fixture(scope="module")
def inv():
    return load_inventory(HERE / "hosts-backup.yaml")


def text(plan, host=None, component=None) -> str:
    return "\n".join(f"{s.label}\n{s.script}" for h, steps in plan.items() if host in (None, h)
                     for s in steps if component in (None, s.component))


def with_backup(inv, **keys):
    backup = dataclasses.replace(inv.settings.backup, **keys)
    return dataclasses.replace(inv, settings=dataclasses.replace(inv.settings, backup=backup))


def without_node4(inv, node3_backup=False):
    hosts = {n: h for n, h in inv.hosts.items() if n != "node4"}
    if node3_backup:
        hosts["node3"] = dataclasses.replace(hosts["node3"], roles=hosts["node3"].roles | {"backup"})
    return dataclasses.replace(inv, hosts=hosts)


def test_host_mode_config_and_ssh(inv):
    plan = deploy_plan(inv, os_release("debian-12"))
    repo, db = text(plan, "node4", "backup"), text(plan, "node3", "backup")
    assert backup.mode(inv) == "host"
    assert "pg1-host=192.0.2.13\npg1-host-user=postgres\npg1-path=/var/lib/postgresql/15/main" in repo
    assert "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=<pgbackrest_cipher_pass>" in repo
    assert "repo1-retention-full=2" in repo and "backup-standby" not in repo
    assert "repo1-host=192.0.2.14\nrepo1-host-user=pgbackrest" in db and "cipher-pass" not in db
    assert 'restrict,from="192.0.2.13"' in repo and 'restrict,from="192.0.2.14"' in db
    assert "/home/pgbackrest/.ssh/id_ed25519 (pgbackrest:pgbackrest 600)" in repo
    assert "/var/lib/postgresql/.ssh/id_ed25519 (postgres:postgres 600)" in db
    assert "OnCalendar=Sun *-*-* 01:00:00" in repo and "airflow-ha-backup-full.timer" not in db
    assert "User=pgbackrest" in repo
    assert "archive_command = 'pgbackrest --stanza=airflow archive-push %p'" in text(plan, "node3", "postgres")
    assert "archive_mode = 'on'" in text(plan, "node3", "postgres")


def test_secrets_never_on_a_command_line(inv):
    plan = deploy_plan(inv, os_release("debian-12"))
    for steps in plan.values():
        for s in steps:
            if "<pgbackrest_cipher_pass>" in s.script or "<pgbackrest_ssh_key>" in s.script:
                assert s.script.startswith("write /etc/pgbackrest/pgbackrest.conf (root:") or "id_ed25519" in s.script


def test_local_mode_on_the_database_host(inv):
    local = without_node4(inv, node3_backup=True)
    plan = deploy_plan(local, os_release("debian-12"))
    t = text(plan, "node3", "backup")
    assert backup.mode(local) == "local" and "repo1-host" not in t and ".ssh" not in t
    assert "repo1-path=/var/lib/pgbackrest" in t and "User=postgres" in t
    assert "directory /var/lib/pgbackrest" in t


def test_no_repository_changes_nothing(inv):
    plain = without_node4(inv)
    plan = deploy_plan(plain, os_release("debian-12"))
    assert not backup.enabled(plain) and "archive" not in text(plan, "node3", "postgres")
    assert not any(s.component == "backup" for steps in plan.values() for s in steps)


def test_s3_mode_needs_keys_in_secrets(inv):
    s3 = with_backup(without_node4(inv), s3_bucket="b", s3_endpoint="s3.example", s3_region="r", s3_uri_style="path")
    assert backup.mode(s3) == "s3"
    with pytest.raises(UserError, match="backup_s3_key"):
        backup.config_opts(s3, s3.hosts["node3"], platform_from_os_release(os_release("debian-12")), {}, {
            "pgbackrest_cipher_pass": "x"})
    glob, _ = backup.config_opts(s3, s3.hosts["node3"], platform_from_os_release(os_release("debian-12")), {}, {
        "pgbackrest_cipher_pass": "x", "backup_s3_key": "k", "backup_s3_key_secret": "s"})
    assert ("repo1-type", "s3") in glob and ("repo1-s3-uri-style", "path") in glob and ("repo1-s3-key", "k") in glob


def test_patroni_repo_host_knows_every_member_and_uses_a_standby():
    inv = load_inventory(HERE / "hosts-patroni.yaml")
    hosts = dict(inv.hosts)
    hosts["node4"] = inventory.Host("node4", frozenset({"backup"}), "192.0.2.14")
    inv = dataclasses.replace(inv, hosts=hosts)
    plan = deploy_plan(inv, os_release("debian-12"))
    repo = text(plan, "node4", "backup")
    assert all(f"pg{i}-host=192.0.2.1{i}" in repo for i in (1, 2, 3)) and "backup-standby=y" in repo
    assert "archive_command: 'pgbackrest --stanza=airflow archive-push %p'" in text(plan, "node1", "postgres")
    assert "archive_mode: 'on'" in text(plan, "node2", "postgres")
    for member in ("node1", "node2", "node3"):    # each member restarts once its Patroni applied archive_mode
        assert '[ "$v" = on ] && exit 0' in text(plan, member, "postgres")
        assert f"restart --force --pending airflow {member}" in text(plan, member, "postgres")


def test_el9_names(inv):
    plan = deploy_plan(inv, os_release("almalinux-9"))
    t = text(plan, component="backup")
    assert "dnf install -y -q pgbackrest" in t and "pg1-path=/var/lib/pgsql/data" in t
    assert "/var/lib/pgsql/.ssh/id_ed25519" in t


def test_monitoring_rules_and_metrics_timer(inv):
    """With monitoring on: the Prometheus host gets the backup rules (valid YAML, thresholds from health),
    every pgBackRest host a metrics timer for node_exporter's textfile collector."""
    import yaml

    from fabfile import monitoring
    hosts = dict(inv.hosts)
    hosts["node1"] = dataclasses.replace(hosts["node1"], roles=hosts["node1"].roles | {"monitoring"})
    mon = dataclasses.replace(inv, settings=dataclasses.replace(inv.settings, monitoring=True), hosts=hosts)
    plan = deploy_plan(mon, os_release("debian-12"))
    prom = text(plan, "node1", "monitoring")
    assert f"- {monitoring.PROM_RULES_BACKUP}" in prom and monitoring.PROM_RULES_BACKUP in prom.split("promtool")[-1]
    rules = [r for g in yaml.safe_load(backup.alert_rules(mon))["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == {"BackupMissing", "BackupTooOld", "BackupTooOldCritical",
                                           "WalArchivingFailing", "WalArchivingStalled"}
    assert all(r["labels"]["severity"] in ("warning", "critical") and r["expr"] for r in rules)
    assert "> 30 * 3600" in backup.alert_rules(mon) and "> 60 * 3600" in backup.alert_rules(mon)
    repo, db = text(plan, "node4", "backup"), text(plan, "node3", "backup")
    assert "airflow_ha_backup_last_success_timestamp_seconds" in repo and "pg_stat_archiver" not in repo
    assert "pg_stat_archiver" in db and "airflow-ha-backup-metrics.timer" in db


def test_stanza_is_planned_where_backups_run(inv):
    """--check plans the stanza steps (backup.finalize) on the host that runs them: the repository host, else
    the primary; on a new Patroni cluster (no leader yet) the member that bootstraps it."""
    def stanza_hosts(inv_):
        return [h for h, steps in deploy_plan(inv_, os_release("debian-12")).items()
                if any(s.component == "backup" and s.label == "command stanza" for s in steps)]
    assert stanza_hosts(inv) == ["node4"]
    assert stanza_hosts(without_node4(inv, node3_backup=True)) == ["node3"]
    assert stanza_hosts(with_backup(load_inventory(HERE / "hosts-patroni.yaml"), repo_path="/mnt/backups")) == ["node1"]
