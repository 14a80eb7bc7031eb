"""Secrets: generated once with mode 0600, reused, never rotated silently, masked in output."""

from __future__ import annotations

import os
import stat

from fabfile.core import secrets


def test_generated_once_0600_and_reused(tmp_path):
    inv = tmp_path / "hosts.yaml"
    inv.write_text("")
    first = secrets.load_or_create(inv)
    path = secrets.secrets_path(inv)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert secrets.load_or_create(inv) == first
    assert set(first) == set(secrets.GENERATORS)


def test_missing_key_added_existing_never_rotated(tmp_path):
    inv = tmp_path / "hosts.yaml"
    path = secrets.secrets_path(inv)
    path.parent.mkdir()
    path.write_text("redis_password: keepme123\n")
    data = secrets.load_or_create(inv)
    assert data["redis_password"] == "keepme123" and data["fernet_key"]


def test_check_mode_writes_nothing(tmp_path):
    inv = tmp_path / "hosts.yaml"
    secrets.load_or_create(inv, check=True)
    assert not secrets.secrets_path(inv).exists()


def test_masker_hides_every_value():
    mask = secrets.masker({"a": "supersecret1", "b": "othersecret2"})
    assert mask("x supersecret1 y othersecret2") == "x ******** y ********"
