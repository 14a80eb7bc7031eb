"""Templates live as files under files/<component>/; rendered with Jinja2, undefined variables are errors.

Start-up time: Jinja2 is imported on first use, compiled templates are cached as bytecode per user
(`$XDG_CACHE_HOME/airflow-ha/jinja2`, keyed by Jinja2 on each template's source), and `warm()` (started
by the runner while SSH connections open) imports Jinja2 and loads every template before the first render.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

FILES = Path(__file__).resolve().parents[2] / "files"
_lock = threading.Lock()
_environment = None


def _cache_dir() -> Path | None:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "airflow-ha" / "jinja2"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return base if os.access(base, os.W_OK) else None


def _env():
    """The one Jinja2 environment (created once, even when threads race)."""
    global _environment  # noqa: PLW0603 - created lazily, once per process
    with _lock:
        if _environment is None:
            import jinja2
            cache = _cache_dir()
            _environment = jinja2.Environment(
                loader=jinja2.FileSystemLoader(str(FILES)), undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
                bytecode_cache=jinja2.FileSystemBytecodeCache(str(cache)) if cache else None)
        return _environment


def render(name: str, **context) -> str:
    """Render files/<name> (a .j2 template) with `context`."""
    return _env().get_template(name).render(**context)


def warm() -> None:
    """Import Jinja2 and load every template (from the bytecode cache when it has them)."""
    env = _env()
    for path in sorted(FILES.rglob("*.j2")):
        env.get_template(path.relative_to(FILES).as_posix())


def static(name: str) -> bytes:
    """The bytes of a static file under files/."""
    return (FILES / name).read_bytes()
