"""End-to-end (issue 19): exactly one nginx host holds the VIP, it answers from the control machine, and
`inv drill.vip` (pull the plug on the holder) runs inside `drill.all` (tests/e2e/test_drills.py).
"""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.util import NODES, ROOT, http, ssh

pytestmark = pytest.mark.e2e


def vip() -> str:
    return yaml.safe_load((ROOT / "hosts.yaml").read_text())["cluster"]["vip"]


def holders() -> list[str]:
    return [n for n in NODES if f" {vip()}/" in ssh(n, "ip -o -4 addr show").stdout]


def test_exactly_one_host_holds_the_vip_and_it_answers(deployed):
    assert len(holders()) == 1, holders()
    status, body = http(f"http://{vip()}/api/v2/monitor/health", timeout=5)
    assert status == 200 and "metadatabase" in str(body)
