"""Issue 19: the VIP (keepalived), no host depending on one other host, and the single points of failure."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fabfile import airflow, firewall, health, keepalived, nginx, packages, services, spof
from fabfile.components import load_inventory
from fabfile.core import secrets
from fabfile.core.errors import InventoryError, UserError
from fabfile.core.facts import parse_facts
from fabfile.core.offline import fresh_run

SPEC = Path(__file__).resolve().parents[1] / "spec"
HOSTS = """
hosts:
  node1: {address: 10.0.0.11, roles: [redis, sentinel, api_server, scheduler, triggerer, worker, nginx]}
  node2: {address: 10.0.0.12, roles: [redis, sentinel, api_server, scheduler, dag_processor, worker, nginx]}
  node3: {address: 10.0.0.13, roles: [redis, sentinel, postgres, worker, flower, nginx]}
  node4: {address: 10.0.0.14, roles: [worker, triggerer]}
"""


def load(tmp_path, cluster: str = "vip: 10.0.0.100", hosts: str = HOSTS):
    p = tmp_path / "hosts.yaml"
    p.write_text("cluster:\n" + textwrap.indent(textwrap.dedent(cluster), "  ") + "\n" + textwrap.dedent(hosts))
    return load_inventory(p)


def ctx_for(inv, name, os_release="debian-12", vrrp_password="s3cret99"):
    run = fresh_run(inv, (SPEC / "os-release" / os_release).read_text())
    run.secrets["vrrp_password"] = vrrp_password
    return run.context(inv.hosts[name])


# -- validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cluster, message", [
    ("vip: 10.0.0.300", "is not an IPv4 address"),
    ("vip: fe80::1", "is not an IPv4 address"),
    ("vip: 10.0.0.12", "is the address of host node2"),
    ("{vip: 10.0.0.100, vip_router_id: 256}", "not in 1-255"),
    ("vip_interface: eth1", "vip_interface without vip"),
    ("vip_router_id: 7", "vip_router_id without vip"),
])
def test_bad_vip_settings_are_refused(tmp_path, cluster, message):
    with pytest.raises(InventoryError) as exc:
        load(tmp_path, cluster)
    assert message in exc.value.message


def test_vip_equal_to_a_resolved_address_is_refused_at_plan_time(tmp_path):
    inv = load(tmp_path)
    ctx = ctx_for(inv, "node1")
    ctx.run.addresses["node2"] = "10.0.0.100"      # e.g. resolved from ssh_config, not in the inventory
    with pytest.raises(UserError, match="is the address of host node2"):
        keepalived.config(ctx)


def test_router_id_given_or_derived_from_the_cluster_name(tmp_path):
    assert keepalived.router_id(load(tmp_path, "{vip: 10.0.0.100, vip_router_id: 42}")) == 42
    derived = keepalived.router_id(load(tmp_path))
    assert 1 <= derived <= 255
    assert derived == keepalived.router_id(load(tmp_path))
    assert derived != keepalived.router_id(load(tmp_path, "{vip: 10.0.0.100, name: other}"))


# -- keepalived ------------------------------------------------------------------------------------
def test_keepalived_only_on_nginx_hosts_and_only_with_a_vip(tmp_path):
    inv = load(tmp_path)
    assert [h.name for h in inv.hosts.values() if keepalived.applies(inv, h)] == ["node1", "node2", "node3"]
    no_vip = load(tmp_path, "name: airflow")
    assert not any(keepalived.applies(no_vip, h) for h in no_vip.hosts.values())


def test_keepalived_config_peers_priorities_auth_and_track_script(tmp_path):
    inv = load(tmp_path)
    confs = {n: keepalived.config(ctx_for(inv, n)) for n in ("node1", "node2", "node3")}
    c2 = confs["node2"]
    assert "unicast_src_ip 10.0.0.12" in c2
    peers = c2.split("unicast_peer {")[1].split("}")[0]
    assert "10.0.0.11" in peers and "10.0.0.13" in peers and "10.0.0.12" not in peers
    assert [int(c.split("\n    priority ")[1].split()[0]) for c in confs.values()] == [200, 199, 198]
    for c in confs.values():
        assert "state BACKUP" in c and "nopreempt" in c and "state MASTER" not in c
        assert "auth_type PASS" in c and "auth_pass s3cret99" in c
        assert f"virtual_router_id {keepalived.router_id(inv)}" in c
        assert "10.0.0.100/32 dev eth0" in c and "interface eth0" in c
        assert f"script \"{keepalived.CHECK}\"" in c
        assert all(k in c for k in ("interval 2", "fall 3", "rise 2", "chk_airflow_nginx"))


def test_keepalived_interface_setting_and_missing_interface(tmp_path):
    inv = load(tmp_path, "{vip: 10.0.0.100, vip_interface: bond0}")
    assert "dev bond0" in keepalived.config(ctx_for(inv, "node1"))
    inv = load(tmp_path)
    ctx = ctx_for(inv, "node1")
    ctx.facts.interfaces.clear()
    with pytest.raises(UserError, match="no interface of node1 carries"):
        keepalived.interface(ctx)


def test_keepalived_config_is_a_secret_file_and_reloads_on_change(tmp_path):
    steps = keepalived.steps(ctx_for(load(tmp_path), "node1"))
    conf = next(s for s in steps if s.target == keepalived.CONF)
    assert conf.mode == 0o600 and conf.notify == ("keepalived",)
    service = next(s for s in steps if s.kind == "service")
    assert service.reload_only
    assert "reload" in service.plan("enabled\nactive\n", {"keepalived"}).script


def test_tls_track_script_uses_https(tmp_path):
    inv = load(tmp_path, "{vip: 10.0.0.100, tls: {enabled: true}}")
    assert "-k https://127.0.0.1:443/api/v2/version" in keepalived.check_script(inv)


def test_track_script_passes_on_any_upstream_answer_and_fails_on_gateway_errors(tmp_path):
    """A dead database (health 503 via the api-server's JSON, or 401 from /version) must keep the VIP; 502-504 or
    no answer (no api-server behind nginx) must fail. The script runs with a fake curl printing the code."""
    import subprocess
    script = keepalived.check_script(load(tmp_path, "{vip: 10.0.0.100}"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for code, ok in (("200", True), ("401", True), ("500", True), ("502", False), ("504", False), ("000", False)):
        curl = bin_dir / "curl"
        curl.write_text(f"#!/bin/sh\nprintf {code}\n")
        curl.chmod(0o755)
        res = subprocess.run(["sh", "-c", script.replace("/usr/bin/curl", str(curl))], capture_output=True, check=False)
        assert (res.returncode == 0) == ok, code


def test_vrrp_password_is_8_characters_and_masked():
    value = secrets.GENERATORS["vrrp_password"]()
    assert len(value) == 8
    assert secrets.masker({"vrrp_password": value})(f"auth_pass {value}") == "auth_pass ********"


def test_facts_map_addresses_to_interfaces():
    text = (SPEC / "os-release" / "debian-12").read_text()
    facts = parse_facts(f"{text}\n@@facts\nuid=0\ninet4=lo 127.0.0.1/8\ninet4=host0@if5 10.213.0.11/24\n")
    assert facts.interfaces == {"127.0.0.1": "lo", "10.213.0.11": "host0"}


# -- firewall --------------------------------------------------------------------------------------
def test_ufw_allows_vrrp_from_the_other_nginx_hosts_only(tmp_path):
    inv = load(tmp_path)
    rules = firewall.ufw_rules(ctx_for(inv, "node1"))
    assert [r for r in rules if "vrrp" in r] == ["ufw allow from 10.0.0.12 proto vrrp",
                                                 "ufw allow from 10.0.0.13 proto vrrp"]
    assert not [r for r in firewall.ufw_rules(ctx_for(inv, "node4")) if "vrrp" in r]
    assert not [r for r in firewall.ufw_rules(ctx_for(load(tmp_path, "name: x"), "node1")) if "vrrp" in r]


def test_firewalld_rich_rules_for_vrrp(tmp_path):
    ctx = ctx_for(load(tmp_path), "node3", "almalinux-9")
    assert firewall.rich_rules(ctx) == [
        'rule family="ipv4" source address="10.0.0.11" protocol value="vrrp" accept',
        'rule family="ipv4" source address="10.0.0.12" protocol value="vrrp" accept']
    zone = next(s for s in firewall._firewalld(ctx) if s.target == "zone airflow-ha")
    assert "--add-rich-rule='rule family=\"ipv4\" source address=\"10.0.0.11\" protocol value=\"vrrp\" accept'" \
        in zone.script
    assert "--remove-rich-rule" in zone.script and "--list-rich-rules" in zone.unless


# -- no single other host in any process's path ---------------------------------------------------
def test_local_only_nginx_on_airflow_hosts_without_the_nginx_role(tmp_path):
    inv = load(tmp_path)
    node4 = inv.hosts["node4"]
    assert nginx.local_only(node4) and nginx.applies(inv, node4)
    assert not nginx.local_only(inv.hosts["node1"])
    ctx = ctx_for(inv, "node4")
    site = next(s for s in nginx.steps(ctx) if s.target == nginx.names(ctx.platform).site).content
    assert "listen 127.0.0.1:80 default_server;" in site
    assert "10.0.0.11:8080" in site and "10.0.0.12:8080" in site
    assert "flower" not in site and "ssl" not in site
    assert firewall.public_ports(ctx) == [22]
    assert "nginx" in packages.role_packages(ctx)
    assert "10.0.0.14" in services.unit_values(ctx)["trusted_proxies"]


def test_host_with_only_flower_gets_no_nginx(tmp_path):
    inv = load(tmp_path, hosts=HOSTS + "  node5: {address: 10.0.0.15, roles: [flower]}\n")
    assert not nginx.applies(inv, inv.hosts["node5"])


@pytest.mark.parametrize("name", ["node1", "node3", "node4"])
def test_execution_api_is_always_the_local_nginx(tmp_path, name):
    values = airflow.config_values(ctx_for(load(tmp_path), name))
    assert values["execution_api_server_url"] == "http://127.0.0.1:80/execution/"
    assert values["base_url"] == "http://10.0.0.100/"


def test_base_url_without_vip_is_the_first_nginx_host(tmp_path):
    assert airflow.config_values(ctx_for(load(tmp_path, "name: x"), "node4"))["base_url"] == "http://node1/"


def test_self_signed_certificate_names_the_hosts_and_the_vip(tmp_path):
    ctx = ctx_for(load(tmp_path, "{vip: 10.0.0.100, tls: {enabled: true}}"), "node2")
    assert nginx.subject_alt_names(ctx) == "DNS:node1,DNS:node2,DNS:node3,IP:10.0.0.12,IP:10.0.0.100"
    cert = next(s for s in nginx.steps(ctx) if s.target == "self-signed certificate")
    assert "-addext 'subjectAltName=DNS:node1,DNS:node2,DNS:node3,IP:10.0.0.12,IP:10.0.0.100'" in cert.script
    assert nginx.SAN_STAMP in cert.unless


# -- single points of failure ----------------------------------------------------------------------
def test_single_points_of_failure(tmp_path):
    points = spof.single_points(load(tmp_path, "name: x"))
    assert points == ["database: 1 host (node3)", "dag-processor: 1 host (node2, restarts in place)",
                      "flower: 1 host (node3)", "no VIP: clients use node1's address (set cluster.vip)"]
    assert "no VIP" not in " ".join(spof.single_points(load(tmp_path)))


def test_single_points_of_a_minimal_layout(tmp_path):
    inv = load(tmp_path, hosts="""
        hosts:
          solo: {address: 10.0.0.11, roles: [redis, sentinel, postgres, api_server, scheduler, dag_processor,
                                              worker, nginx]}
        """)
    points = spof.single_points(inv)
    assert "nginx: 1 host (solo)" in points and "api-server: 1 host (solo)" in points
    assert "redis: 1 host (solo)" in points and not any(p.startswith("triggerer") for p in points)


def test_health_rows_for_single_points_and_the_vip(tmp_path):
    rows = health.spof_checks(load(tmp_path))
    assert {(r.host, r.check, r.status) for r in rows} == {("cluster", "single point of failure", "warn")}
    assert keepalived.vip_check("10.0.0.100", {"node1": False, "node2": True}).status == "ok"
    assert keepalived.vip_check("10.0.0.100", {"node1": True, "node2": True}).status == "fail"
    assert keepalived.vip_check("10.0.0.100", {"node1": False}).detail == "10.0.0.100 on no host (1 answered)"


def test_health_expects_keepalived_on_nginx_hosts_and_nginx_on_local_ones(tmp_path):
    inv = load(tmp_path)
    run = ctx_for(inv, "node1").run
    assert "keepalived" in health.expected_units(run, inv.hosts["node1"])
    assert "keepalived" not in health.expected_units(run, inv.hosts["node4"])
    assert "nginx" in health.expected_units(run, inv.hosts["node4"])
    assert "ip -o -4 addr show to 10.0.0.100/32" in health.host_script(run, inv.hosts["node2"])


def test_vip_drill_stays_means_the_holder_at_power_on_keeps_it():
    """drill.vip: a second move during a database failover is reported; moving back after power-on fails."""
    from fabfile.drills import vip_row
    times, ok_probe = (100.0, 102.7, 100.0), (0, 268)
    row = vip_row("node1", "node2", times, (41, 624), ok_probe, ["node3"], ["node3"], "success", 0)
    assert row.verdict == "PASS", row
    assert "VIP on node2 after 2.7s (then on node3 before the power-on)" in row.recovery
    assert "VIP stays on node3" in row.recovery
    back = vip_row("node1", "node2", times, (41, 624), ok_probe, ["node2"], ["node1"], "success", 0)
    assert back.verdict == "FAIL" and "VIP stays on node1" in back.recovery
    lost = vip_row("node1", "node2", times, (41, 624), ok_probe, [], [], "success", 0)
    assert lost.verdict == "FAIL", "no holder before the power-on is no verdict to pass"
