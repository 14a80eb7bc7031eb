"""nginx in front of every api-server (active-active, max_fails) and Flower (basic auth), optional TLS.

Every host with the nginx role balances over all api-servers; workers use their local nginx as the
Execution API endpoint, so losing one api-server or one nginx never stops the others.
`nginx -t` runs before every reload; a failing test leaves the running config untouched.
Flower's password is stored as {SSHA} (salted SHA-1, RFC 2307, understood by nginx) with a salt derived
from the secret itself, so the file is byte-identical on every run (idempotent) and on every host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from . import selinux
from .core.steps import Absent, Command, File, Link, Service
from .core.templates import render

NAME = "nginx"
SELF_SIGNED = ("/etc/nginx/airflow-ha.crt", "/etc/nginx/airflow-ha.key")


def applies(inv, host) -> bool:
    return host.has("nginx")


def ssha(password: str) -> str:
    salt = hmac.new(password.encode(), b"airflow-ha-flower-salt", hashlib.sha256).digest()[:8]
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def steps(ctx) -> list:
    inv, plat, run = ctx.inv, ctx.platform, ctx.run
    ports, tls = inv.cluster["ports"], inv.cluster["tls"]
    unit, web_user = plat.units["nginx"], plat.users["nginx"]
    flower = inv.with_role("flower")
    cert, key = (tls["cert"], tls["key"]) if tls["cert"] else SELF_SIGNED
    site = render("nginx/airflow-ha.conf.j2",
                  api_servers=[(h.name, run.addresses[h.name]) for h in inv.with_role("api_server")],
                  flower=(flower[0].name, run.addresses[flower[0].name]) if flower else None,
                  api_port=ports["api"], flower_port=ports["flower"], http_port=ports["http"],
                  https_port=ports["https"], tls=tls["enabled"], tls_cert=f"/etc/nginx/{_name(cert)}",
                  tls_key=f"/etc/nginx/{_name(key)}")
    out = []
    if plat.paths.get("nginx_main_conf"):   # EL9: nginx.conf without its own port-80 server (facts.py)
        out.append(File(plat.paths["nginx_main_conf"], render("nginx/nginx-el.conf.j2", user=web_user),
                        notify=(unit,)))
    out += [
        File("/etc/nginx/airflow-ha-proxy.conf", render("nginx/proxy.conf.j2"), notify=(unit,)),
        File(plat.paths["nginx_site"], site, notify=(unit,)),
        File("/etc/nginx/airflow-ha-flower.htpasswd", f"flower:{ssha(ctx.secrets['flower_password'])}\n",
             owner="root", group=web_user, mode=0o640, notify=(unit,)),
    ]
    if plat.paths["nginx_site_link"]:
        out.append(Link(plat.paths["nginx_site_link"], source=plat.paths["nginx_site"], notify=(unit,)))
    if plat.paths["nginx_default_site"]:
        out.append(Absent(plat.paths["nginx_default_site"], notify=(unit,)))
    if tls["enabled"] and tls["cert"]:
        out += [File(f"/etc/nginx/{_name(cert)}", _read(inv, cert), notify=(unit,)),
                File(f"/etc/nginx/{_name(key)}", _read(inv, key), mode=0o600, notify=(unit,), secret=True)]
    elif tls["enabled"]:
        out.append(Command("self-signed certificate", desc="generate a self-signed pair",
                           unless=f"[ -s {SELF_SIGNED[0]} ] && [ -s {SELF_SIGNED[1]} ]",
                           script=(f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj '/CN={ctx.host.name}' "
                                   f"-keyout {SELF_SIGNED[1]} -out {SELF_SIGNED[0]} 2>/dev/null\n"
                                   f"chmod 600 {SELF_SIGNED[1]}"), notify=(unit,)))
    out += [
        Command(unit, desc="nginx -t", script="nginx -t 2>&1", only_if_notified=True),
        Service(unit, reload_only=True, config=plat.paths["nginx_site"]),
    ]
    return out + selinux.steps_for_nginx(ctx)


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _read(inv, path: str) -> str:
    p = inv.base_dir / path if not path.startswith("/") else path
    with open(p) as fh:
        return fh.read()


def health_url(inv) -> str:
    """The local nginx's Airflow health URL (HTTPS when TLS is on: plain HTTP then redirects)."""
    ports = inv.cluster["ports"]
    if inv.cluster["tls"]["enabled"]:
        return f"https://127.0.0.1:{ports['https']}/api/v2/monitor/health"
    return f"http://127.0.0.1:{ports['http']}/api/v2/monitor/health"


def gate(run, host) -> str | None:
    """Rolling reloads go on only when this host's nginx answers the Airflow health URL with 200."""
    url = health_url(run.inv)
    code = run.remote(host.name).sh(f"curl -sk -m 4 -o /dev/null -w '%{{http_code}}' {url}", timeout=15).out.strip()
    return None if code == "200" else f"{url}: HTTP {code or 'no answer'}"
