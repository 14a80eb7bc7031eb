"""Per-step fixtures (pyinfra style): tests/steps/<step kind>/<case>.json, probed state in, planned change out.

Each case gives:
* `args`: the step's constructor arguments (`mode` as an octal string, `content_base64` for bytes content);
* `probe` (and `batch`, `own_probe` for batched kinds): the shell the step runs to learn the state;
* `state`: what that probe prints on a host in the case's state; `notified`: handlers a changed step notified;
* `change`: null (nothing to do) or the planned change: `desc`, `script` (one item per line) and every field
  that differs from a `Change`'s default (`notify`, `restart`, `downtime`, `warning`, `new_content`,
  `stream`: the command the tar is streamed to, `preview`);
* optionally `batch_output` (+ `own_output`): what the step's batch command (steps.BATCHES) prints for this
  step alone (+ the rest of its own probe): the plan made from that answer must be the same.
Case names start with fresh (nothing there yet), converged (no change) or drifted (changed behind our back).
The fixtures are written and reviewed by hand: a step that plans differently fails here until its cases are
edited (there is no regeneration flag).
"""

from __future__ import annotations

import base64
import inspect
import json
from pathlib import Path

import pytest

from fabfile.airflow import Wheelhouse
from fabfile.core import steps as steps_module
from fabfile.core.steps import BATCHES, Change, Preview, Step

ROOT = Path(__file__).resolve().parents[1] / "steps"
KINDS = {cls.kind: cls for cls in (*[c for _, c in inspect.getmembers(steps_module, inspect.isclass)
                                     if issubclass(c, Step) and c is not Step], Wheelhouse)}
TUPLES = ("names", "notify", "listen", "installed")
#: kinds whose plan ignores the state (nothing to converge): one case is enough
STATELESS = {"warn"}
CASES = sorted(ROOT.glob("*/*.json"))


def build(kind: str, args: dict) -> Step:
    """The step of `kind` from a case's `args` (JSON spellings turned into the constructor's types)."""
    kw = dict(args)
    for key in TUPLES:
        if key in kw:
            kw[key] = tuple(kw[key])
    if "mode" in kw:
        kw["mode"] = int(kw["mode"], 8)
    if "content_base64" in kw:
        kw["content"] = base64.b64decode(kw.pop("content_base64"))
    if "preview" in kw:
        kw["preview"] = Preview(**kw["preview"])
    if kind == "wheelhouse":
        kw["local"] = Path(kw["local"])
        kw["manifest"] = kw["manifest"].encode()
    return KINDS[kind](**kw)


def probe_fields(step: Step) -> dict:
    """The shell that prints the state: the step's own probe, and for batched kinds the batch and the rest."""
    out = {"probe": step.probe()}
    if step.batch():
        out["batch"] = step.batch()
        if step.own_probe():
            out["own_probe"] = step.own_probe()
    return out


DEFAULTS = {"script": [], "notify": [], "restart": False, "downtime": "", "warning": False, "new_content": None,
            "stream": None, "preview": None}


def observed(change: Change | None, defaults: bool = True) -> dict | None:
    """A change as the fixtures spell it (`defaults=False`: without the fields that keep their defaults)."""
    if change is None:
        return None
    preview = change.preview
    out = {"desc": change.desc, "script": change.script.split("\n") if change.script else [],
           "notify": list(change.notify), "restart": change.restart, "downtime": change.downtime,
           "warning": change.warning, "new_content": change.new_content,
           "stream": change.stream[0] if change.stream else None,
           "preview": {k: v for k, v in (("target", preview.target), ("desired", preview.desired),
                                         ("current", preview.current)) if v} if preview else None}
    return out if defaults else {k: v for k, v in out.items() if k in ("desc", "script") or DEFAULTS.get(k, ...) != v}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def expected(case: dict) -> dict | None:
    return None if case["change"] is None else {**DEFAULTS, **case["change"]}


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_step_plans_as_its_fixture_says(path):
    case, kind = load(path), path.parent.name
    step = build(kind, case["args"])
    assert probe_fields(step) == {k: case[k] for k in ("probe", "batch", "own_probe") if k in case}, \
        "the probe changed: the state text of this case may no longer be what it prints"
    assert observed(step.plan(case["state"], set(case.get("notified", ())))) == expected(case)


BATCHED = [p for p in CASES if "batch_output" in load(p)]


@pytest.mark.parametrize("path", BATCHED, ids=[f"{p.parent.name}/{p.stem}" for p in BATCHED])
def test_the_batch_answer_plans_like_the_own_probe(path):
    case, kind = load(path), path.parent.name
    step = build(kind, case["args"])
    states = BATCHES[step.batch()].states(case["batch_output"], [step])
    assert states is not None and len(states) == 1, "the batch output could not be read"
    state = states[0] + case.get("own_output", "")
    assert observed(step.plan(state, set(case.get("notified", ())))) == expected(case)


def test_every_step_kind_has_fresh_converged_and_drifted_cases():
    have = {p.parent.name for p in CASES}
    assert have == set(KINDS), "a step kind without fixtures (or a fixture folder of no kind)"
    for kind in set(KINDS) - STATELESS:
        names = {p.stem.split("-")[0] for p in CASES if p.parent.name == kind}
        assert {"fresh", "converged", "drifted"} <= names, kind


def test_fixture_files_are_canonical():
    """Every case has the fields the format names, and none else (a typo would silently test nothing)."""
    allowed = {"doc", "args", "probe", "batch", "own_probe", "state", "notified", "batch_output", "own_output",
               "change"}
    for path in CASES:
        case = load(path)
        assert {"doc", "args", "probe", "state", "change"} <= set(case) <= allowed, path
        if case["change"] is not None:
            assert {"desc", "script"} <= set(case["change"]) <= set(DEFAULTS) | {"desc"}, path
        assert path.stem.split("-")[0] in ("fresh", "converged", "drifted", "always"), path
