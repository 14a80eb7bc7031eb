"""The plan the spec tests compare: a full `deploy` (every component, in stack order) on fresh hosts."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from fabfile.components import COMPONENTS, load_inventory
from fabfile.core.facts import platform_from_os_release
from fabfile.core.offline import PlannedStep, plan_offline

HERE = Path(__file__).resolve().parent


def deploy_plan(inv, os_release_text: str) -> dict[str, list[PlannedStep]]:
    """`cluster.python_version` follows the platform, as a user deploying to it must set it (core/facts.py)."""
    python = platform_from_os_release(os_release_text).python_version or inv.settings.python_version
    inv = dataclasses.replace(inv, settings=dataclasses.replace(inv.settings, python_version=python))
    return plan_offline(inv, os_release_text, COMPONENTS)


def os_release(name: str) -> str:
    """The os-release sample tests/spec/os-release/<name>."""
    return (HERE / "os-release" / name).read_text()


@functools.cache
def spec_plan(inventory: str, release: str) -> dict[str, list[PlannedStep]]:
    """`deploy_plan` of the spec inventory tests/spec/<inventory> on os-release/<release>, made once per session
    and shared: read it, never change it (a test that changes the inventory plans its own)."""
    return deploy_plan(load_inventory(HERE / inventory), os_release(release))
