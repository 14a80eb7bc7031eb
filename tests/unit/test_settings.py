"""Typed settings (issue 14, item 4): the inventory's `cluster:` block and host overrides load into frozen
dataclasses (core/inventory.py), and code reads attributes, never `cluster[...]` by key."""

from __future__ import annotations

import ast
import dataclasses
import textwrap
import types
import typing
from pathlib import Path

import pytest

from fabfile.components import COMPONENTS, REGISTRY, load_inventory
from fabfile.core import inventory
from fabfile.core.inventory import CoreSettings

FABFILE = Path(__file__).resolve().parents[2] / "fabfile"
INV = """
cluster:
  worker_stop_timeout: 300
  redis: {master_name: broker}
  ports: {redis: 6380}
hosts:
  node1: {roles: [redis, sentinel, api_server, scheduler, dag_processor, triggerer, worker, nginx]}
  node2: {roles: [redis, sentinel, api_server, scheduler, worker, nginx], worker_concurrency: 8}
  node3: {roles: [redis, sentinel, postgres, worker, flower], worker_queues: [default, heavy]}
"""


@pytest.fixture
def inv(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text(textwrap.dedent(INV))
    return load_inventory(path)


def test_cluster_block_loads_typed(inv):
    s = inv.settings
    assert dataclasses.is_dataclass(s) and isinstance(s, CoreSettings)
    assert all(isinstance(s, c.settings) for c in COMPONENTS if c.settings)
    assert (s.worker_stop_timeout, s.name, s.redis.master_name, s.redis.mode) == (300, "airflow", "broker", "replication")
    assert (inv.ports.redis, inv.ports.sentinel, inv.ports is s.ports) == (6380, 26379, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.worker_stop_timeout = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.redis.master_name = "x"


def test_host_overrides_are_typed_too(inv):
    node1, node2, node3 = inv.hosts.values()
    assert inv.settings_for(node2).worker_concurrency == 8 and inv.settings_for(node1).worker_concurrency == 4
    assert inv.settings_for(node3).worker_queues == ["default", "heavy"]
    assert inv.settings_for(node1) is inv.settings                 # no overrides: the cluster's own
    assert inv.settings_for(node2).redis == inv.settings.redis


def test_cluster_mapping_is_a_read_only_copy(inv):
    assert inv.cluster["ports"]["redis"] == 6380 and inv.cluster["redis"]["master_name"] == "broker"
    assert inventory.as_dict(inv.settings) == dict(inv.cluster)
    with pytest.raises(TypeError):
        inv.cluster["vip"] = "10.0.0.1"
    inv.cluster["worker_queues"].append("x")                       # a copy: the settings do not change
    assert inv.settings.worker_queues == ["default"]


def test_defaults_are_the_dataclasses():
    defaults = inventory.cluster_defaults(REGISTRY)
    assert inventory.as_dict(inventory.settings_class(REGISTRY)()) == defaults
    assert list(defaults)[:len(inventory.CORE_DEFAULTS)] == list(inventory.CORE_DEFAULTS)


def _hint_fits(hint, default) -> bool:
    """The annotation says what the validator checks: the default's type (None: an optional string)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if default is None:
        return origin is types.UnionType and set(args) == {str, type(None)}
    if origin is list:
        return isinstance(default, list) and all(isinstance(v, args[0]) for v in default)
    if hint is float:          # a positive number (POSITIVE_NUMBERS): a whole default is fine
        return isinstance(default, int | float) and not isinstance(default, bool)
    return type(default) is hint


@pytest.mark.parametrize("cls", [CoreSettings, *REGISTRY.settings_classes()], ids=lambda c: c.__name__)
def test_every_field_is_annotated_with_its_defaults_type(cls):
    """The validator checks a value against its default's type: the annotation must say the same."""
    classes = [cls] + [type(getattr(cls(), f.name)) for f in dataclasses.fields(cls)
                       if dataclasses.is_dataclass(getattr(cls(), f.name))]
    for c in classes:
        assert c.__dataclass_params__.frozen, c
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            default = getattr(c(), f.name)
            if dataclasses.is_dataclass(default):
                assert hints[f.name] is type(default)
            else:
                assert _hint_fits(hints[f.name], default), (c.__name__, f.name, hints[f.name], default)


def test_no_code_reads_cluster_by_key():
    """fabfile/ reads inv.settings / inv.ports attributes: no `<x>.cluster[...]`, `.cluster.get(...)`, `.var(...)`."""
    found = []
    for path in FABFILE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "cluster":
                found.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in ("get", "update") \
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "cluster":
                found.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "var":
                found.append(f"{path.name}:{node.lineno}")
    assert found == []
