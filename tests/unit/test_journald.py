"""The journald component (the README's "Adding a component" example): settings, validation, steps."""

from __future__ import annotations

import pytest

from fabfile import journald
from fabfile.components import BY_NAME, COMPONENTS
from fabfile.core.errors import InventoryError
from tests.unit.test_vip import ctx_for, load


def test_it_is_one_line_in_the_ordered_list_after_the_firewall():
    names = [c.name for c in COMPONENTS]
    assert BY_NAME["journald"] is journald.COMPONENT
    assert names.index("firewall") < names.index("journald") < names.index("redis")


def test_defaults_give_a_capped_persistent_journal_that_restarts_journald_on_change(tmp_path):
    inv = load(tmp_path, "{}")
    assert (inv.settings.journal_max_use, inv.settings.journal_max_retention) == ("1G", "1month")
    steps = journald.steps(ctx_for(inv, "node4"))
    conf = next(s for s in steps if s.target == journald.CONF)
    assert conf.notify == ("systemd-journald",) and conf.mode == 0o644
    assert "Storage=persistent\nSystemMaxUse=1G\nMaxRetentionSec=1month\n" in conf.content
    service = next(s for s in steps if s.kind == "service")
    assert service.plan("static\nactive\n", set()) is None, "a running journald is left alone"
    change = service.plan("static\nactive\n", {"systemd-journald"})
    assert change.script == "systemctl restart systemd-journald" and change.restart, "rolled, one host at a time"
    flush = steps[-1]
    assert flush.only_if_notified and flush.target == "systemd-journald:started" and "journalctl --flush" in flush.script
    assert journald.COMPONENT.units(None, inv.hosts["node1"]) == ["systemd-journald"]


def test_settings_reach_the_drop_in(tmp_path):
    inv = load(tmp_path, '{journal_max_use: 500M, journal_max_retention: "0"}')
    conf = next(s for s in journald.steps(ctx_for(inv, "node1")) if s.target == journald.CONF)
    assert "SystemMaxUse=500M\nMaxRetentionSec=0\n" in conf.content


@pytest.mark.parametrize("cluster, message", [
    ("journal_max_use: lots", "journal_max_use 'lots' is not a size"),
    ("journal_max_use: 1.5G", "is not a size"),
    ("journal_max_retention: forever", "journal_max_retention 'forever' is not a time span"),
    ("journal_max_use: \"1\"", None),
    ("journal_max_retention: 2weeks", None),
    ("journal_max_retention: 0", "expected a string"),
])
def test_bad_values_get_one_clear_error_before_any_host(tmp_path, cluster, message):
    if message is None:
        load(tmp_path, cluster)
        return
    with pytest.raises(InventoryError) as exc:
        load(tmp_path, cluster)
    assert message in exc.value.message and "cluster.journal_max" in exc.value.where
