"""systemd-journald on every host: persistent, capped (`cluster.journal_max_use`, `journal_max_retention`).

Every daemon of the stack logs to the journal (its stdout), so without a cap a scheduler stuck in an error
loop can fill the root filesystem, and without persistent storage the logs of before a reboot (the ones a
failover post-mortem needs) are gone (Debian's default keeps them only when /var/log/journal exists).
A drop-in (`/etc/systemd/journald.conf.d/`), so the distribution's journald.conf stays untouched; the
same path and unit on every supported platform. A change restarts systemd-journald, one host at a time:
the services keep running and their stdout is kept open by systemd across the restart.

The component added through the contract (fabfile/core/component.py) as the worked example of the
README's "Adding a component": this module, files/journald/, one line in fabfile/components.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .core.component import Component
from .core.errors import InventoryError
from .core.steps import Command, File, Service
from .core.templates import render

NAME = "journald"
CONF = "/etc/systemd/journald.conf.d/airflow-ha.conf"
UNIT = "systemd-journald"
SIZE = re.compile(r"^[1-9][0-9]*[KMGT]?$")
#: the time spans journald.conf(5) accepts for MaxRetentionSec (0 = no time limit)
SPAN = re.compile(r"^(0|[1-9][0-9]*(s|sec|m|min|h|hr|d|day|days|w|week|weeks|month|months|y|year|years)?)$")


@dataclass(frozen=True)
class JournaldSettings:
    journal_max_use: str = "1G"              # SystemMaxUse: the journal's disk cap (bytes, K, M, G or T)
    journal_max_retention: str = "1month"    # MaxRetentionSec: entries older than this are removed (0 = never)


def applies(inv, host) -> bool:
    return True


def steps(ctx) -> list:
    s = ctx.inv.settings
    conf = render("journald/airflow-ha.conf.j2", max_use=s.journal_max_use, max_retention=s.journal_max_retention)
    return [File(CONF, conf, notify=(UNIT,)), Service(UNIT),
            # after a restart: move what is still in /run/log/journal to /var/log/journal now, not at next boot
            Command(Service.started(UNIT), desc="journalctl --flush (to the persistent journal)",
                    script="journalctl --flush", only_if_notified=True)]


def validate(inv) -> None:
    """The cap is a journald size, the retention a journald time span: one clear error before any host."""
    s, path = inv.settings, inv.path
    if not SIZE.match(s.journal_max_use):
        raise InventoryError(f"journal_max_use {s.journal_max_use!r} is not a size",
                             f"{path}: cluster.journal_max_use", "give a number with K, M, G or T, e.g. 1G")
    if not SPAN.match(s.journal_max_retention):
        raise InventoryError(f"journal_max_retention {s.journal_max_retention!r} is not a time span",
                             f"{path}: cluster.journal_max_retention",
                             "give a number with s, min, h, day, week, month or year, e.g. 1month (0: no limit)")


class Journald(Component):
    """The journal's cap and persistence on every host."""

    name = NAME
    settings = JournaldSettings
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    validate = staticmethod(validate)

    def units(self, run, host) -> list[str]:
        return [UNIT]


COMPONENT = Journald()
