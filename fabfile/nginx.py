"""nginx in front of every api-server (active-active, max_fails) and Flower (basic auth), optional TLS.

Every host with the nginx role balances over all api-servers. No process depends on one other host: a
host running a scheduler, dag-processor, triggerer or worker *without* the nginx role gets a local-only
nginx (127.0.0.1:<http>, all api-servers, no public port, files/nginx/airflow-ha-local.conf.j2), and
every Airflow process reaches the Execution API at http://127.0.0.1:<http>/execution/ (airflow.py).
Self-signed certificates name every nginx host, this host's address and the VIP (subjectAltName).
`nginx -t` runs before every reload; a failing test leaves the running config untouched.
Flower's password is stored as {SSHA} (salted SHA-1, RFC 2307, understood by nginx) with a salt derived
from the secret itself, so the file is byte-identical on every run (idempotent) and on every host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field

from . import selinux
from .airflow_api import monitor_health
from .core.component import Component, Role
from .core.errors import InventoryError
from .core.steps import Absent, Command, File, Link, Service, Warn
from .core.templates import render

NAME = "nginx"
@dataclass(frozen=True)
class TlsBlock:
    """`cluster.tls`: HTTPS on nginx (cert and key: local files, relative to the inventory)."""

    enabled: bool = False
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class NginxSettings:
    tls: TlsBlock = field(default_factory=TlsBlock)
PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class NginxNames:
    """Where nginx keeps its config on one platform (docs/platforms.md: each entry and its source)."""

    site: str
    site_link: str | None      # Debian: sites-enabled/ links to sites-available/
    default_site: str | None   # the packaged default server, removed
    main_conf: str | None      # EL9: nginx.conf has its own port-80 server: we replace it (nginx-el.conf.j2)
    user: str
    packages: tuple[str, ...] = ("nginx", "openssl")   # no apache2-utils: we write the htpasswd ({SSHA})
    unit: str = "nginx"


NAMES = {
    "debian": NginxNames(site="/etc/nginx/sites-available/airflow-ha.conf",
                         site_link="/etc/nginx/sites-enabled/airflow-ha.conf",
                         default_site="/etc/nginx/sites-enabled/default", main_conf=None, user="www-data"),
    "rhel": NginxNames(site="/etc/nginx/conf.d/airflow-ha.conf", site_link=None, default_site=None,
                       main_conf="/etc/nginx/nginx.conf", user="nginx"),
}


def names(platform) -> NginxNames:
    return NAMES[platform.family]
SELF_SIGNED = ("/etc/nginx/airflow-ha.crt", "/etc/nginx/airflow-ha.key")
SAN_STAMP = "/etc/nginx/airflow-ha.san"
#: roles whose processes call the api-servers / Execution API: they get a local nginx on every host
CLIENT_ROLES = ("scheduler", "dag_processor", "triggerer", "worker")


def local_only(host) -> bool:
    """A host that needs nginx for its own processes only (loopback, no public port)."""
    return not host.has("nginx") and host.has(*CLIENT_ROLES)


def runs_nginx(host) -> bool:
    return host.has("nginx") or local_only(host)


def applies(inv, host) -> bool:
    return runs_nginx(host)


def subject_alt_names(ctx) -> str:
    """subjectAltName of the self-signed certificate: every nginx host's name, this address, the VIP."""
    names = [f"DNS:{h.name}" for h in ctx.inv.with_role("nginx")] + [f"IP:{ctx.address}"]
    vip = ctx.inv.settings.vip
    return ",".join(names + ([f"IP:{vip}"] if vip else []))


def ssha(password: str) -> str:
    salt = hmac.new(password.encode(), b"airflow-ha-flower-salt", hashlib.sha256).digest()[:8]
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


#: seconds nginx skips an api-server after 2 failed attempts (the rolling gate waits this out too)
FAIL_TIMEOUT = 10


def steps(ctx) -> list:
    inv, run, nginx = ctx.inv, ctx.run, names(ctx.platform)
    ports, tls = inv.ports, inv.settings.tls
    unit, web_user = nginx.unit, nginx.user
    flower = inv.with_role("flower")
    cert, key = (tls.cert, tls.key) if tls.cert else SELF_SIGNED
    api_servers = [(h.name, run.addresses[h.name]) for h in inv.with_role("api_server")]
    if local_only(ctx.host):
        return _common(ctx, render("nginx/airflow-ha-local.conf.j2", api_servers=api_servers,
                                   api_port=ports.api, http_port=ports.http, fail_timeout=FAIL_TIMEOUT))
    site = render("nginx/airflow-ha.conf.j2", api_servers=api_servers,
                  flower=(flower[0].name, run.addresses[flower[0].name]) if flower else None,
                  api_port=ports.api, flower_port=ports.flower, http_port=ports.http,
                  https_port=ports.https, tls=tls.enabled, tls_cert=f"/etc/nginx/{_name(cert)}",
                  tls_key=f"/etc/nginx/{_name(key)}", fail_timeout=FAIL_TIMEOUT)
    out = [File("/etc/nginx/airflow-ha-flower.htpasswd", f"flower:{ssha(ctx.secrets['flower_password'])}\n",
                owner="root", group=web_user, mode=0o640, notify=(unit,))]
    if tls.enabled and tls.cert:
        out += [File(f"/etc/nginx/{_name(cert)}", _read(inv, cert), notify=(unit,)),
                File(f"/etc/nginx/{_name(key)}", _read(inv, key), mode=0o600, notify=(unit,))]
        out += _cert_warning(ctx, _read(inv, cert))
    elif tls.enabled:
        out.append(_self_signed(ctx, unit))
    return _common(ctx, site, out)


def _common(ctx, site: str, extra=()) -> list:
    """Site file, proxy settings, packaged default server removed, `nginx -t`, reload, SELinux."""
    nginx = names(ctx.platform)
    unit = nginx.unit
    out = []
    if nginx.main_conf:   # EL9: nginx.conf without its own port-80 server
        out.append(File(nginx.main_conf, render("nginx/nginx-el.conf.j2", user=nginx.user), notify=(unit,)))
    out += [
        File("/etc/nginx/airflow-ha-proxy.conf", render("nginx/proxy.conf.j2"), notify=(unit,)),
        File(nginx.site, site, notify=(unit,)),
        *extra,
    ]
    if nginx.site_link:
        out.append(Link(nginx.site_link, source=nginx.site, notify=(unit,)))
    if nginx.default_site:
        out.append(Absent(nginx.default_site, notify=(unit,)))
    out += [
        Command(unit, desc="nginx -t", script="nginx -t 2>&1", only_if_notified=True),
        Service(unit, reload_only=True, config=nginx.site),
    ]
    return out + selinux.steps_for_nginx(ctx)


def _self_signed(ctx, unit) -> Command:
    """A self-signed pair, regenerated when the names it must cover change (stamp beside it)."""
    san = subject_alt_names(ctx)
    crt, key = SELF_SIGNED
    return Command("self-signed certificate", desc=f"generate a self-signed pair ({san})",
                   unless=f"[ -s {crt} ] && [ -s {key} ] && [ \"$(cat {SAN_STAMP} 2>/dev/null)\" = '{san}' ]",
                   script=(f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj '/CN={ctx.host.name}' "
                           f"-addext 'subjectAltName={san}' -keyout {key} -out {crt} 2>/dev/null\n"
                           f"chmod 600 {key}\necho '{san}' > {SAN_STAMP}"), notify=(unit,))


def _cert_warning(ctx, pem: str) -> list:
    """A Warn step when the user's certificate does not name the VIP or this host (subjectAltName)."""
    from cryptography import x509
    try:
        ext = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        have = {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))
    except (ValueError, x509.ExtensionNotFound):
        have = set()
    want = [ctx.host.name] + ([ctx.inv.settings.vip] if ctx.inv.settings.vip else [])
    missing = [w for w in want if w not in have]
    if not missing:
        return []
    return [Warn(target="tls certificate", message=f"cluster.tls.cert does not name {', '.join(missing)} "
                                                   "(subjectAltName): browsers will refuse it there")]


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _read(inv, path: str) -> str:
    p = inv.base_dir / path if not path.startswith("/") else path
    with open(p) as fh:
        return fh.read()


def health_url(inv) -> str:
    """The local nginx's Airflow health URL (HTTPS when TLS is on: plain HTTP then redirects)."""
    ports = inv.ports
    if inv.settings.tls.enabled:
        return f"https://127.0.0.1:{ports.https}/api/v2/monitor/health"
    return f"http://127.0.0.1:{ports.http}/api/v2/monitor/health"


def drain_script(site: str, server: str, drained: bool) -> str:
    """Mark `server` (address:port) `down` in the api-server upstream of `site`, or back up; then test
    and reload nginx (graceful: requests in flight finish) unless the file already says so."""
    pattern = re.escape(server).replace("/", "\\/")
    edit = (f"s/^(\\s*server {pattern}) (max_fails)/\\1 down \\2/" if drained
            else f"s/^(\\s*server {pattern}) down /\\1 /")
    return (f"before=$(sha256sum < {site})\nsed -i -E '{edit}' {site}\n"
            f"[ \"$(sha256sum < {site})\" = \"$before\" ] || {{ nginx -t -q && nginx -s reload && sleep 1; }}")


def set_drained(run, server_host, drained: bool) -> str | None:
    """Take an api-server out of (or back into) every nginx's upstream, local-only ones included, in
    parallel. None when done on every reachable nginx host, else why not."""
    server = f"{run.addresses[server_host.name]}:{run.inv.ports.api}"
    hosts = [h for h in run.inv.hosts.values() if runs_nginx(h)]
    run.connect(hosts)   # nginx hosts outside a `-H` subset too (their facts: the site's path)

    def one(host):
        if host.name in run.failed or host.name not in run.facts:
            return None
        site = names(run.facts[host.name].platform).site
        res = run.remote(host.name).sh(drain_script(site, server, drained), timeout=30)
        return None if res.ok else f"{host.name}: {res.out.strip()[-200:] or f'exit {res.rc}'}"
    return "; ".join(e for e in run.parallel(one, hosts) if e) or None


def gate(run, host) -> str | None:
    """Rolling reloads go on only when this host's nginx answers the Airflow health URL with 200."""
    url = health_url(run.inv)
    code = run.remote(host.name).sh(f"curl -sk -m 4 -o /dev/null -w '%{{http_code}}' {url}", timeout=15).out.strip()
    return None if code == "200" else f"{url}: HTTP {code or 'no answer'}"


def validate(inv) -> None:
    """A TLS certificate comes with its key."""
    tls = inv.settings.tls
    if bool(tls.cert) != bool(tls.key):
        raise InventoryError("tls.cert and tls.key must be given together", f"{inv.path}: cluster.tls",
                             "give both paths, or neither to generate a self-signed pair")


def health_probe(run, host) -> list[str]:
    """`inv health`: Airflow's health through this host's nginx (what its clients and workers reach)."""
    if not runs_nginx(host):
        return []
    return [f'echo "@@nginx $(curl -s -m 4 http://127.0.0.1:{run.inv.ports.http}'
            '/api/v2/monitor/health)"']


def health_rows(run, host, answers) -> list:
    return [monitor_health(host.name, "health via nginx", body) for body in answers.get("nginx", [])]


class Nginx(Component):
    """nginx on every host that serves or calls the api-servers; reloads gated on the health URL."""

    name = NAME
    roles = (Role("nginx", ("http", "https"), public=True, required="give at least one host the 'nginx' role"),)
    settings = NginxSettings
    default_ports = PORTS
    applies = staticmethod(applies)
    steps = staticmethod(steps)
    names = staticmethod(names)
    validate = staticmethod(validate)
    gate = staticmethod(gate)
    health_probe = staticmethod(health_probe)
    health_rows = staticmethod(health_rows)

    def public_ports(self, inv, host) -> list[str]:
        """HTTPS only with TLS (nginx listens on it always: the port check counts it)."""
        tls = inv.settings.tls.enabled
        return [p for p in super().public_ports(inv, host) if tls or p != "https"]

    def units(self, run, host) -> list[str]:
        return [names(run.facts[host.name].platform).unit] if runs_nginx(host) else []


COMPONENT = Nginx()
