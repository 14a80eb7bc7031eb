"""A planned change as a person reads it (`-v` and the spec goldens): file contents as text, not base64."""

from __future__ import annotations

import base64
import re

from .steps import File

_HEREDOC = re.compile(r"base64 -d > (\S+) <<'__AIRFLOW_HA_EOF__'\n(.*?)__AIRFLOW_HA_EOF__\n", re.S)
_B64_RUN = re.compile(r"(?m)(?:^[A-Za-z0-9+/]{76}\n)+(?:^[A-Za-z0-9+/=]{1,76}\n)?")


def readable(step, change) -> str:
    """The change's shell as a reviewer wants to read it: file contents as text, base64 decoded or elided."""
    if isinstance(step, File) and change.new_content is not None:
        text = step.content if isinstance(step.content, str) else f"(binary, {len(step.data)} bytes)\n"
        return f"write {step.target} ({step.owner}:{step.group} {format(step.mode, 'o')})\n{text}"
    script = change.script
    if change.stream:
        script = f"stream (tar from the control machine) | {change.stream[0]}" + (
            f"\n{script}" if script.strip() not in ("", "true") else "")
    return _elide_base64(_decode_heredocs(script))


def _decode_heredocs(script: str) -> str:
    def text(m):
        try:
            body = base64.b64decode(m.group(2)).decode()
        except (ValueError, UnicodeDecodeError):
            return m.group(0)
        return f"cat > {m.group(1)} <<'__AIRFLOW_HA_EOF__'\n{body}__AIRFLOW_HA_EOF__\n"
    return _HEREDOC.sub(text, script)


def _elide_base64(script: str) -> str:
    return _B64_RUN.sub("<base64 data elided>\n", script)
