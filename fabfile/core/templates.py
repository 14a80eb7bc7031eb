"""Templates live as files under files/<component>/; rendered with Jinja2, undefined variables are errors."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

FILES = Path(__file__).resolve().parents[2] / "files"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(FILES)), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render(name: str, **context) -> str:
    """Render files/<name> (a .j2 template) with `context`."""
    return _env().get_template(name).render(**context)


def static(name: str) -> bytes:
    """The bytes of a static file under files/."""
    return (FILES / name).read_bytes()
