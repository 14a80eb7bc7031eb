"""pgBackRest (fabfile/backup.py): repository modes and inventory rules, `info --output=json` parsing, the
backup table, health thresholds, the restore plan and target, the fernet verdict, the generated SSH key."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timezone

import pytest

from fabfile import backup, backup_tasks, repository
from fabfile.components import load_inventory
from fabfile.core import secrets
from fabfile.core.errors import InventoryError, UserError

SINGLE = """
cluster: {backup: {%s}}
hosts:
  node1: {roles: [redis, sentinel, api_server, scheduler, dag_processor, triggerer, worker, nginx]}
  node2: {roles: [redis, sentinel, api_server, scheduler, worker, nginx]}
  node3: {roles: [redis, sentinel, postgres, worker, flower%s]}
  node4: {roles: [%s]}
"""

#: the shape of pgBackRest 2.4x `info --output=json` (timestamps epoch seconds; sizes bytes)
INFO = [{
    "archive": [{"database": {"id": 1, "repo-key": 1}, "id": "15-1",
                 "max": "000000010000000000000009", "min": "000000010000000000000002"}],
    "backup": [
        {"archive": {"start": "000000010000000000000002", "stop": "000000010000000000000002"},
         "backrest": {"format": 5, "version": "2.45"}, "database": {"id": 1, "repo-key": 1}, "error": False,
         "info": {"delta": 24316343, "repository": {"delta": 2969512, "size": 2969512}, "size": 24316343},
         "label": "20260601-010002F", "prior": None, "reference": None,
         "timestamp": {"start": 1780275602, "stop": 1780275610}, "type": "full"},
        {"archive": {"start": "000000010000000000000007", "stop": "000000010000000000000007"},
         "backrest": {"format": 5, "version": "2.45"}, "database": {"id": 1, "repo-key": 1}, "error": False,
         "info": {"delta": 9902, "repository": {"delta": 925, "size": 2986259}, "size": 24433039},
         "label": "20260601-010002F_20260602-010001D", "prior": "20260601-010002F",
         "reference": ["20260601-010002F"], "timestamp": {"start": 1780362001, "stop": 1780362004}, "type": "diff"}],
    "cipher": "aes-256-cbc", "db": [{"id": 1, "repo-key": 1, "system-id": 7147741414128675215, "version": "15"}],
    "name": "airflow", "repo": [{"cipher": "aes-256-cbc", "key": 1, "status": {"code": 0, "message": "ok"}}],
    "status": {"code": 0, "lock": {"backup": {"held": False}}, "message": "ok"}}]


def load(tmp_path, keys="", node3="", node4="redis"):
    p = tmp_path / "hosts.yaml"
    p.write_text(textwrap.dedent(SINGLE % (keys, node3, node4)).replace("node4: {roles: [redis]}\n", ""))
    return load_inventory(p)


def test_modes(tmp_path):
    assert backup.mode(load(tmp_path)) == "none"
    assert backup.mode(load(tmp_path, node4="backup")) == "host"
    assert backup.mode(load(tmp_path, node3=", backup")) == "local"
    assert backup.mode(load(tmp_path, keys="repo_path: /mnt/pgbackrest")) == "path"
    s3 = load(tmp_path, keys="s3_bucket: b, s3_endpoint: s3.example, s3_region: r")
    assert backup.mode(s3) == "s3" and repository.archive_settings(s3)[1] == (
        "archive_command", "pgbackrest --stanza=airflow archive-push %p")
    assert repository.archive_settings(load(tmp_path)) == []


@pytest.mark.parametrize("keys,node3,node4,message", [
    ("", "", "backup, redis", None),
    ("s3_bucket: b", "", "redis", "without backup.s3_endpoint"),
    ("s3_bucket: b, s3_endpoint: e, s3_region: r", "", "backup", "two repositories"),
    ("repo_path: relative", "", "redis", "not absolute"),
    ("retention_full: 0", "", "redis", "at least 1"),
    ("full_schedule: ''", "", "redis", "full_schedule is empty"),
    ("diff_schedule: 'daily; rm -rf /'", "", "redis", "calendar expression"),
    ("s3_bucket: b, s3_endpoint: e, s3_region: r, s3_uri_style: virtual", "", "redis", "s3_uri_style"),
    ("", ", backup", "backup", "2 backup hosts"),
])
def test_inventory_rules(tmp_path, keys, node3, node4, message):
    if message is None:
        load(tmp_path, keys, node3, node4)
        return
    with pytest.raises(InventoryError, match=message):
        load(tmp_path, keys, node3, node4)


def test_patroni_member_cannot_hold_the_repository(tmp_path):
    p = tmp_path / "hosts.yaml"
    p.write_text(textwrap.dedent("""
        hosts:
          node1: {roles: [redis, sentinel, postgres, api_server, scheduler, dag_processor, triggerer, worker, nginx]}
          node2: {roles: [redis, sentinel, postgres, api_server, scheduler, worker, nginx]}
          node3: {roles: [redis, sentinel, postgres, worker, flower, backup]}
    """))
    with pytest.raises(InventoryError, match="also a Patroni member"):
        load_inventory(p)


def test_parse_info_and_table():
    info = backup.parse_info(json.dumps(INFO))
    assert info["status"] == 0 and [b.type for b in info["backups"]] == ["full", "diff"]
    full = info["backups"][0]
    assert (full.start, full.stop, full.size, full.repo_size) == (1780275602, 1780275610, 24316343, 2969512)
    assert (info["wal_min"], info["wal_max"]) == ("000000010000000000000002", "000000010000000000000009")
    out = backup.table(info)
    assert "2026-06-01 01:00:02" in out and "23.2MiB" in out and "2.8MiB" in out
    assert "000000010000000000000007 - 000000010000000000000007" in out and "2 backup(s)" in out


def test_parse_info_missing_stanza():
    info = backup.parse_info(json.dumps([{"archive": [], "backup": [], "db": [], "name": "airflow", "repo": [],
                                          "status": {"code": 1, "message": "missing stanza path"}}]))
    assert info["status"] in backup.MISSING_STANZA and info["backups"] == []
    assert backup.parse_info("[]")["status"] == 1
    with pytest.raises(UserError):
        backup.parse_info("ERROR: [056]: unable to find primary cluster")


def test_age_thresholds():
    info = backup.parse_info(json.dumps(INFO))
    stop = 1780362004
    assert backup.age_check(info, stop + 3600, 24).status == "ok"
    assert backup.age_check(info, stop + 31 * 3600, 24).status == "warn"
    assert backup.age_check(info, stop + 61 * 3600, 24).status == "fail"
    assert backup.age_check({"backups": [], "message": "no valid backups"}, stop, 24).status == "fail"


def test_expected_hours(tmp_path):
    assert backup.expected_hours(load(tmp_path, keys="repo_path: /r")) == 24
    assert backup.expected_hours(load(tmp_path, keys="repo_path: /r, diff_schedule: ''")) == 168
    assert backup.expected_hours(load(tmp_path, keys="repo_path: /r, max_age_hours: 3")) == 3


def test_archiver_check():
    t = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
    later = datetime(2026, 6, 1, 12, 5, tzinfo=timezone.utc)
    assert backup.archiver_check((10, 0, t, None)).status == "ok"
    assert backup.archiver_check((10, 2, later, t)).status == "ok"         # recovered after a failure
    assert backup.archiver_check((10, 2, t, later)).status == "fail"
    assert backup.archiver_check((0, 3, None, t)).status == "fail"
    assert backup.archiver_check((0, 0, None, None)).status == "warn"


def test_target_epoch():
    assert backup_tasks.target_epoch("2026-06-01 01:00:00") == datetime(2026, 6, 1, 1, tzinfo=timezone.utc).timestamp()
    assert backup_tasks.target_epoch("2026-06-01 03:00:00+02") == datetime(2026, 6, 1, 1, tzinfo=timezone.utc).timestamp()
    for bad in ("yesterday", "2026-06-01", "2026-06-01T01:00:00", "2026-06-01 01:00:00'; drop"):
        with pytest.raises(UserError):
            backup_tasks.target_epoch(bad)


def test_restore_plan(tmp_path):
    inv = load(tmp_path, node4="backup")
    info = backup.parse_info(json.dumps(INFO))
    lines = backup_tasks.restore_plan(inv, info, "2026-06-02 00:00:00", "node3")
    assert any("STOP Airflow on node1, node2, node3" in line for line in lines)
    assert any("DESTROY every change made after the target on node3" in line for line in lines)
    with pytest.raises(UserError, match="before the oldest backup"):
        backup_tasks.restore_plan(inv, info, "2026-05-01 00:00:00", "node3")
    with pytest.raises(UserError, match="no successful backup"):
        backup_tasks.restore_plan(inv, {"backups": []}, None, "node3")


def test_fernet_verdict():
    assert backup_tasks.fernet_verdict("FERNET_OK\n") is None
    err = backup_tasks.fernet_verdict("FERNET_BAD connection my_db,variable api_key\n")
    assert "connection my_db,variable api_key" in err and ".secrets/" in err
    assert backup_tasks.fernet_verdict("Traceback ...") is not None


def test_generated_ssh_key_gives_a_public_line():
    key = secrets.GENERATORS["pgbackrest_ssh_key"]()
    assert key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert backup.public_key(key).startswith("ssh-ed25519 AAAA")
    assert backup.public_key("<pgbackrest_ssh_key>") == "ssh-ed25519 <pgbackrest_ssh_key.pub>"
    assert len(secrets.GENERATORS["pgbackrest_cipher_pass"]()) >= 64


def test_backup_set_is_the_newest_before_the_target():
    info = backup.parse_info(json.dumps(INFO))
    assert backup_tasks.backup_set(info, None) is None
    assert backup_tasks.backup_set(info, "2026-06-01 12:00:00") == "20260601-010002F"
    assert backup_tasks.backup_set(info, "2026-06-03 00:00:00") == "20260601-010002F_20260602-010001D"
    assert backup_tasks.backup_set(info, "2026-05-01 00:00:00") is None


def test_restore_is_not_shadowed_by_its_run():
    r = backup_tasks.Restore(type("R", (), {"inv": None})(), "node3", None)
    assert callable(r.execute) and not callable(getattr(r, "run", None))


def test_target_without_offset_is_sent_as_utc():
    assert backup_tasks.with_offset("2026-06-01 01:00:00") == "2026-06-01 01:00:00+00"
    assert backup_tasks.with_offset("2026-06-01 01:00:00+02") == "2026-06-01 01:00:00+02"
    assert backup_tasks.with_offset(None) is None
