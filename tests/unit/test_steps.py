"""Step planning is pure: given a probed state it plans exactly the change needed (or none)."""

from __future__ import annotations

import hashlib

from fabfile.core.steps import Command, Directory, File, Line, Packages, Service


def test_file_unchanged_when_content_owner_mode_match():
    f = File("/etc/x.conf", "hello\n", owner="root", group="redis", mode=0o640)
    digest = hashlib.sha256(b"hello\n").hexdigest()
    state = f"root redis 640 regular file\n{digest}\n"
    assert f.plan(state, set()) is None


def test_file_content_change_is_atomic_write_and_notifies():
    f = File("/etc/x.conf", "new\n", notify=("redis-server",))
    change = f.plan("root root 644 regular file\n" + "0" * 64 + "\n", set())
    assert change.desc == "update content" and change.notify == ("redis-server",)
    assert "mktemp" in change.script and "mv -f" in change.script and change.new_content == "new\n"


def test_file_mode_only_change_does_not_rewrite():
    f = File("/etc/x.conf", "a", mode=0o600)
    change = f.plan(f"root root 644 regular file\n{hashlib.sha256(b'a').hexdigest()}", set())
    assert change.script == "chmod 600 /etc/x.conf"


def test_packages_only_missing_ones_installed():
    p = Packages(names=("nginx", "redis-server"))
    assert p.plan("nginx installed\nredis-server installed\n", set()) is None
    change = p.plan("nginx installed\n", set())
    assert "redis-server" in change.script and "nginx" not in change.desc


def test_service_restarts_only_when_notified_and_running():
    s = Service("redis-server")
    assert s.plan("enabled\nactive\n", set()) is None
    assert s.plan("enabled\nactive\n", {"redis-server"}).script == "systemctl restart redis-server"
    started = s.plan("enabled\ninactive\n", {"redis-server"})
    # one action: restart also starts a stopped unit, and picks up config written after a package's
    # postinst started it with defaults in the same apply
    assert started.script == "systemctl restart redis-server" and started.desc == "start"
    assert s.plan("enabled\ninactive\n", set()).script == "systemctl start redis-server"
    assert "enable" in s.plan("disabled\nactive\n", set()).script


def test_service_absent_role_stops_and_disables():
    s = Service("airflow-worker", present=False)
    assert s.plan("\n\n", set()) is None                         # unit not installed: nothing to do
    assert s.plan("enabled\nactive\n", set()).script == "systemctl disable --now airflow-worker"


def test_command_guard_and_notified_only():
    c = Command("migrate", script="true", unless="test -f /x")
    assert c.plan("done\n", set()) is None and c.plan("run\n", set()) is not None
    t = Command("nginx", script="nginx -t", only_if_notified=True)
    assert t.plan("run", set()) is None and t.plan("run", {"nginx"}) is not None


def test_directory_and_line():
    d = Directory("/etc/airflow", owner="root", group="airflow", mode=0o750)
    assert d.plan("root airflow 750 directory", set()) is None
    assert d.plan("absent", set()).script.startswith("install -d")
    line = Line(path="/etc/hosts", line="10.0.0.1 node1", replace=r"^\S+\s+node1$")
    assert line.plan("present", set()) is None
    assert "sed -i" in line.plan("absent", set()).script


def test_service_marks_restarts_of_running_units_only():
    s = Service("airflow-scheduler")
    assert s.plan("enabled\nactive\n", {"airflow-scheduler"}).restart
    assert not s.plan("enabled\ninactive\n", {"airflow-scheduler"}).restart      # a first start
    assert not s.plan("disabled\ninactive\n", set()).restart
    nginx = Service("nginx", reload_only=True)
    assert nginx.plan("enabled\nactive\n", {"nginx"}).restart
    assert nginx.plan("enabled\ninactive\n", {"nginx"}).desc == "start"


def test_service_restart_with_downtime_says_so():
    pg = Service("postgresql", downtime="single database")
    change = pg.plan("enabled\nactive\n", {"postgresql"})
    assert change.desc == "restart (DOWNTIME: single database)" and change.downtime == "single database"
    assert pg.plan("enabled\ninactive\n", {"postgresql"}).downtime == ""


def test_package_default_instance_restarted_onto_our_first_config_is_a_first_start():
    s = Service("redis-server", config="/etc/redis/airflow-ha.conf")
    assert "[ -e /etc/redis/airflow-ha.conf ] && echo ours || echo fresh" in s.probe()
    assert not s.plan("enabled\nactive\nfresh\n", {"redis-server"}).restart    # apt started it with defaults
    assert s.plan("enabled\nactive\nours\n", {"redis-server"}).restart
    pg = Service("postgresql", downtime="single database", config="/etc/postgresql/15/main/conf.d/x.conf")
    assert pg.plan("enabled\nactive\nfresh\n", {"postgresql"}).desc == "restart"


def test_reload_only_service_restarts_onto_its_first_config():
    """nginx started by its package holds *:80; a reload onto our first config (127.0.0.1:80) fails quietly."""
    svc = Service("nginx", reload_only=True, config="/etc/nginx/sites-available/airflow-ha.conf")
    first = svc.plan("enabled\nactive\nfresh\n", {"nginx"})
    assert "systemctl restart nginx" in first.script and not first.restart
    later = svc.plan("enabled\nactive\nours\n", {"nginx"})
    assert "reload-or-restart" in later.script and later.restart
