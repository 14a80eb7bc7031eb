"""Golden plans: the complete `deploy` on fresh hosts (planned offline, tests/spec/plans.py), reviewed as text.

The scheme keeps every plan pinned to the line while a reviewer reads each difference once:
* one full golden per distribution family, in the default layout (Patroni, hosts-patroni.yaml):
  golden/patroni-debian-12.txt and golden/patroni-el9.txt;
* a diff golden (golden/*.diff, format in golden_files.py) for each other layout of a family: only the lines
  in which its plan differs from its base plan. debian-12.diff and el9.diff: the single-database layout
  (hosts.yaml) against the family's Patroni plan; backup-*.diff: hosts-backup.yaml (a pgBackRest host) against
  the single-database plan. A change common to all layouts shows once, in the full golden;
* no golden for a release that must plan like another: Ubuntu 24.04 is Debian 12 with its own Python and
  PostgreSQL names, Rocky 9 and RHEL 9 are AlmaLinux 9 (tests/spec/test_spec_families.py asserts both,
  to the line).
After an intended change, regenerate explicitly with `UPDATE_GOLDEN=1 pytest tests/spec` and review the diff;
a missing golden is written and the test fails until it is reviewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fabfile.core.facts import platform_from_os_release
from fabfile.core.offline import format_plan
from tests.spec.golden_files import anchored_diff, apply_anchored_diff, assert_matches_diff_golden, assert_matches_golden
from tests.spec.plans import os_release, spec_plan

pytestmark = pytest.mark.spec

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


@dataclass(frozen=True)
class Golden:
    file: str           # under golden/
    inventory: str      # the spec inventory, under tests/spec/
    release: str        # the os-release sample
    layout: str         # for the title
    base: str = ""      # the golden of the plan this one is a diff against ("": a full golden)


GOLDENS = {g.file: g for g in (
    Golden("patroni-debian-12.txt", "hosts-patroni.yaml", "debian-12", "Patroni"),
    Golden("patroni-el9.txt", "hosts-patroni.yaml", "almalinux-9", "Patroni"),
    Golden("debian-12.diff", "hosts.yaml", "debian-12", "single-database", base="patroni-debian-12.txt"),
    Golden("el9.diff", "hosts.yaml", "almalinux-9", "single-database", base="patroni-el9.txt"),
    Golden("backup-debian-12.diff", "hosts-backup.yaml", "debian-12", "backup", base="debian-12.diff"),
    Golden("backup-el9.diff", "hosts-backup.yaml", "almalinux-9", "backup", base="el9.diff"),
)}


def plan_text(golden: Golden) -> str:
    plat = platform_from_os_release(os_release(golden.release))
    title = f"{plat.name} {golden.layout} layout ({plat.family}, {plat.pkg}, {plat.firewall})"
    return format_plan(spec_plan(golden.inventory, golden.release), title)


def describe(golden: Golden) -> str:
    return f"tests/spec/{golden.inventory} on {golden.release}"


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_plan_matches_golden(name):
    golden = GOLDENS[name]
    if not golden.base:
        assert_matches_golden(plan_text(golden), GOLDEN_DIR / name)
        return
    base = GOLDENS[golden.base]
    header = (f"{name}: the plan of {describe(golden)},\n"
              f"as its differences from the plan of {describe(base)} (golden/{base.file}).\n"
              "Format: tests/spec/golden_files.py; regenerate: UPDATE_GOLDEN=1 pytest tests/spec (then review).")
    assert_matches_diff_golden(plan_text(golden), plan_text(base), GOLDEN_DIR / name, header)


def test_every_golden_file_is_in_the_table():
    """A golden no test reads protects nothing: removed or renamed goldens leave no file behind."""
    assert sorted(p.name for p in GOLDEN_DIR.iterdir()) == sorted(GOLDENS)


def test_each_diff_golden_has_a_base_of_the_same_family():
    for g in GOLDENS.values():
        if g.base:
            assert g.base in GOLDENS and GOLDENS[g.base].release == g.release, g.file


SAMPLE = """# title
# offline plan

===== node1 (3 changes) =====
-- a: command x: run
    echo 1
-- a: command x: run
    echo 2
-- b: file /f: create
    write /f
    line

===== node2 (1 changes) =====
-- a: command x: run
    echo 1
"""


@pytest.mark.parametrize("got", [
    SAMPLE,
    SAMPLE.replace("# title", "# other title"),
    SAMPLE.replace("    echo 2\n", "    echo 2\n    echo 3\n"),                     # the 2nd of two equal headings
    SAMPLE.replace("-- b: file /f: create\n    write /f\n    line\n", ""),        # a whole step removed
    SAMPLE.replace("(1 changes)", "(2 changes)") + "-- c: service c: start\n    systemctl start c\n",  # at the end
    SAMPLE.replace("node2", "node3"),
    "",
])
def test_a_diff_rebuilds_the_plan_exactly(got):
    diff = anchored_diff(SAMPLE, got)
    assert apply_anchored_diff(SAMPLE, diff) == got
    assert (diff == "") == (got == SAMPLE)


def test_diff_hunks_name_the_host_and_the_step():
    diff = anchored_diff(SAMPLE, SAMPLE.replace("    echo 2\n", "    echo 2\n    echo 3\n"))
    assert diff == "@@ node1 | #2 | +2 | -- a: command x: run\n+    echo 3\n"
