"""Cluster secrets: generated once on the control machine, stored 0600, reused, never printed.

File: `<inventory dir>/.secrets/<inventory name>.yaml` (directory 0700, git-ignored). A missing key is
generated and added; an existing key is never changed (rotation is an explicit, separate act).
"""

from __future__ import annotations

import base64
import os
import secrets as _random
from pathlib import Path

import yaml

#: name -> generator. URL-safe values: they end up inside URLs (broker, database) unescaped.
GENERATORS = {
    "fernet_key": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "api_secret_key": lambda: _random.token_urlsafe(32),
    "jwt_secret": lambda: _random.token_urlsafe(32),
    "redis_password": lambda: _random.token_hex(24),
    "sentinel_password": lambda: _random.token_hex(24),
    "postgres_password": lambda: _random.token_hex(24),
    "flower_password": lambda: _random.token_hex(16),
    "admin_password": lambda: _random.token_hex(12),
    "vrrp_password": lambda: _random.token_hex(4),   # keepalived PASS auth uses at most 8 characters
    # Patroni mode (fabfile/patroni.py): PostgreSQL superuser, replication and pg_rewind roles, REST API
    "patroni_superuser_password": lambda: _random.token_hex(24),
    "patroni_replication_password": lambda: _random.token_hex(24),
    "patroni_rewind_password": lambda: _random.token_hex(24),
    "patroni_api_password": lambda: _random.token_hex(16),
    # pgBackRest (fabfile/backup.py): repository encryption (repo1-cipher-pass) and the SSH key the
    # database hosts and the repository host use to reach each other
    "pgbackrest_cipher_pass": lambda: _random.token_urlsafe(48),
    "pgbackrest_ssh_key": lambda: _ssh_key(),  # noqa: PLW0108 - _ssh_key is defined below
}
MASK = "********"
MIN_MASKED = 6   # the shortest secret value masked in output


def _ssh_key() -> str:
    """A new Ed25519 private key in OpenSSH format (no passphrase: pgBackRest runs unattended)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()


def secrets_path(inventory_path: Path, override: str | None = None) -> Path:
    """`override` (inventory `secrets:`, relative to the inventory) or .secrets/<inventory name>.yaml."""
    inventory_path = Path(inventory_path)
    if override:
        p = Path(override)
        return p if p.is_absolute() else inventory_path.parent / p
    return inventory_path.parent / ".secrets" / f"{inventory_path.stem}.yaml"


def load_or_create(inventory_path: Path, check: bool = False, override: str | None = None) -> dict:
    """Read the secrets file, adding any missing secret (not written in --check mode)."""
    path = secrets_path(inventory_path, override)
    data = {}
    if path.exists():
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    missing = [k for k in GENERATORS if not data.get(k)]
    for key in missing:
        data[key] = GENERATORS[key]()
    if missing and not check:
        _write(path, data)
    return data


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# airflow-ha secrets: generated once, never rotated silently. Keep private (mode 0600).\n")
        yaml.safe_dump(data, fh, default_flow_style=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def masker(values: dict):
    """A function that replaces every secret value in a text by ********."""
    secrets = sorted((v for v in values.values() if isinstance(v, str) and len(v) >= MIN_MASKED), key=len, reverse=True)

    def mask(text: str) -> str:
        for value in secrets:
            if value in text:
                text = text.replace(value, MASK)
        return text

    return mask
