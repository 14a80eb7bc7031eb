"""End-to-end (issue 19): exactly one nginx host holds the VIP, it answers from the control machine, and
`inv drill.vip` (pull the plug on the holder) passes with no probe failure once the host is back.

One drill run only: it powers a lab host off and on (~2-4 minutes).
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.e2e.util import NODES, ROOT, http, inv, ssh

pytestmark = pytest.mark.e2e


def vip() -> str:
    return yaml.safe_load((ROOT / "hosts.yaml").read_text())["cluster"]["vip"]


def holders() -> list[str]:
    return [n for n in NODES if f" {vip()}/" in ssh(n, "ip -o -4 addr show").stdout]


def test_exactly_one_host_holds_the_vip_and_it_answers(deployed):
    assert len(holders()) == 1, holders()
    status, body = http(f"http://{vip()}/api/v2/monitor/health", timeout=5)
    assert status == 200 and "metadatabase" in str(body)


def test_drill_vip_moves_the_vip_and_loses_nothing(deployed):
    res = inv("drill.vip", timeout=1800)
    print(res.stdout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    row = re.search(r"^vip\s+.*$", res.stdout, re.M)
    assert row and row.group(0).rstrip().endswith("PASS"), res.stdout
    assert re.search(r"after power-on: 0/\d+ failed", row.group(0)), row.group(0)
    assert len(holders()) == 1
