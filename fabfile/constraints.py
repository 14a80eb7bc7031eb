"""`cluster.constraints_url`: a constraints file fetched once on the control machine, checked and cached.

Fetched with urllib (http://, https:// or file://) into CACHE/<sha256 of the URL>.txt, beside the
wheelhouses; later runs reuse the cached file without fetching (delete it to fetch again). A file that
is not a pip constraints file (an HTML error page, a requirements file) is refused with one UserError
naming the URL. The file then replaces the shipped one everywhere: wheelhouse build, install on hosts.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .core.errors import UserError

CACHE = Path("/var/cache/airflow-ha/constraints")
SCHEMES = ("http://", "https://", "file://")
MIN_PINS = 20
REQUIRED = ("celery",)          # the CeleryExecutor's pin (celery < 5.7) must come from the file
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==[^\s;=]+\s*(;.*)?$")
_EXAMPLE = "https://raw.githubusercontent.com/apache/airflow/constraints-3.3.2/constraints-3.12.txt"


def cache_path(url: str) -> Path:
    return CACHE / f"{hashlib.sha256(url.encode()).hexdigest()}.txt"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def problem(text: str) -> str | None:
    """Why `text` is not a constraints file (None when it is one)."""
    pins = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _PIN.match(line)
        if not m:
            return f"line {n} is not 'name==version': {line[:60]!r}"
        pins.append(_normalize(m.group(1)))
    if len(pins) < MIN_PINS:
        return f"only {len(pins)} pins (a constraints file pins every dependency, >= {MIN_PINS})"
    missing = [r for r in REQUIRED if r not in pins]
    return f"it does not pin {', '.join(missing)}" if missing else None


def _refuse(url: str, what: str, where: str, fix: str = "") -> UserError:
    return UserError(what, f"{where} ({url})",
                     fix or f"point it at a raw pip constraints file for Airflow, e.g. {_EXAMPLE}")


def _download(url: str, where: str, timeout: float) -> str:
    import urllib.error
    import urllib.request  # here, not at import: most runs never download (start-up time)
    if not url.startswith(SCHEMES):
        raise _refuse(url, "unsupported URL scheme", where, "use an http://, https:// or file:// URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _refuse(url, f"cannot fetch the constraints file: {getattr(exc, 'reason', exc)}", where,
                      "check the URL and that this machine can reach it, or unset it to use the shipped "
                      "file") from None


def fetch(url: str, where: str = "cluster.constraints_url", timeout: float = 60) -> Path:
    """The cached, checked constraints file of `url` (fetched on first use only)."""
    path = cache_path(url)
    if path.is_file():
        why = problem(path.read_text(errors="replace"))
        if why:
            raise _refuse(url, f"the cached constraints file {path} is not valid: {why}", where,
                          f"delete {path} to fetch it again")
        return path
    text = _download(url, where, timeout)
    why = problem(text)
    if why:
        raise _refuse(url, f"not a constraints file: {why}", where)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
    return path
