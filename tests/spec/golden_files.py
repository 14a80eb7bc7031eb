"""The golden-file comparisons the spec tests share: regenerate with UPDATE_GOLDEN=1, then review the diff.

Two kinds (tests/spec/test_spec_goldens.py says which plan has which):
* a full golden: the plan's whole text (`assert_matches_golden`);
* a diff golden: only the lines in which a plan differs from its base plan (another plan that is pinned
  itself), as hunks anchored on a step heading of the base (`assert_matches_diff_golden`). A plan is pinned
  exactly by its base and its diff golden (`apply_anchored_diff` rebuilds it), and a change common to both
  plans leaves the diff golden untouched unless it falls in a hunk.

Diff golden format: `# ` comment lines, then hunks. A hunk header names the base line where it starts:
`@@ <host> | #<k> | +<offset> | <heading>`, i.e. `offset` lines below the k-th line equal to `heading` in
that host's section (`title` before the first host); lines inserted are anchored on the step above them.
Then `-<line>` for each base line it removes and `+<line>` for each line it puts in their place.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

TITLE = "title"


def _updating() -> bool:
    return os.environ.get("UPDATE_GOLDEN") == "1"


def _write_or_fail(got: str, path: Path) -> None:
    """Writes `got` to `path` with UPDATE_GOLDEN=1 or when missing (then fails: review it first)."""
    if _updating() or not path.exists():
        path.write_text(got)
        if not _updating():
            pytest.fail(f"{path} did not exist: written, review it and run again")


def assert_matches_golden(got: str, path: Path) -> None:
    """`got` equals the reviewed golden file at `path` (written instead when missing or with UPDATE_GOLDEN=1)."""
    _write_or_fail(got, path)
    assert got == path.read_text(), f"plan differs from {path}: review, then UPDATE_GOLDEN=1"


# -- diff goldens --------------------------------------------------------------------------------------------
_HOST = re.compile(r"^===== (\S+) ")


def _anchors(lines: list[str]) -> list[tuple[str, int, str, int]]:
    """For each line: (host, k, heading, heading's index) of the nearest heading at or above it, the k-th line
    equal to `heading` in the host's section. Headings: the title line, host lines (`===== `), steps (`-- `)."""
    out, host, seen, current = [], TITLE, {}, (TITLE, 1, lines[0] if lines else "", 0)
    for i, line in enumerate(lines):
        m = _HOST.match(line)
        if m:
            host, seen = m.group(1), {}
        if i == 0 or m or line.startswith("-- "):
            seen[line] = seen.get(line, 0) + 1
            current = (host, seen[line], line, i)
        out.append(current)
    return out


def anchored_diff(base: str, got: str) -> str:
    """The hunks that turn `base` into `got` (the format in the module docstring; "" when equal)."""
    a, b = base.split("\n"), got.split("\n")
    anchors = _anchors(a)
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        # an insertion belongs to the step above it (the line before it), anything else to its first line's
        host, k, heading, at = anchors[i1 - 1 if tag == "insert" and i1 else i1]
        out.append(f"@@ {host} | #{k} | +{i1 - at} | {heading}\n")
        out += [f"-{line}\n" for line in a[i1:i2]] + [f"+{line}\n" for line in b[j1:j2]]
    return "".join(out)


def apply_anchored_diff(base: str, diff: str) -> str:
    """`base` with the hunks of `diff` applied: the plan a diff golden stands for."""
    a = base.split("\n")
    where = {(host, k, heading): at for host, k, heading, at in _anchors(a)}
    hunks: list[tuple[int, list[str], list[str]]] = []
    for line in diff.split("\n"):
        if line.startswith("@@ "):
            host, k, offset, heading = line[3:].split(" | ", 3)
            hunks.append((where[(host, int(k[1:]), heading)] + int(offset), [], []))
        elif hunks and line[:1] in ("-", "+"):
            hunks[-1][1 if line[0] == "-" else 2].append(line[1:])
    for at, removed, added in reversed(hunks):
        assert a[at:at + len(removed)] == removed, f"diff does not apply at line {at + 1}: {removed[:1]}"
        a[at:at + len(removed)] = added
    return "\n".join(a)


def assert_matches_diff_golden(got: str, base: str, path: Path, header: str) -> None:
    """`got` is `base` changed as the reviewed diff golden at `path` says (written instead when missing or with
    UPDATE_GOLDEN=1). `header`: what the plan and its base are, written as the file's comment lines."""
    text = "".join(f"# {line}\n" for line in header.splitlines()) + anchored_diff(base, got)
    _write_or_fail(text, path)
    stored = path.read_text()
    assert text == stored, f"plan differs from {path.name} applied to its base: review, then UPDATE_GOLDEN=1"
    assert apply_anchored_diff(base, stored) == got, f"{path.name} does not rebuild the plan (golden_files.py)"
