"""The component contract (fabfile/core/component.py) as fabfile/components.py lists it: every role belongs
to one component, every component knows its names on every supported platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabfile.components import COMPONENTS, REGISTRY
from fabfile.core.errors import PlatformError
from fabfile.core.facts import platform_from_os_release

OS_RELEASES = sorted((Path(__file__).resolve().parents[1] / "spec" / "os-release").iterdir())


def supported(path: Path) -> bool:
    try:
        platform_from_os_release(path.read_text())
    except PlatformError:
        return False
    return True


def test_each_role_and_component_name_is_declared_once():
    roles = [role.name for c in COMPONENTS for role in c.roles]
    assert len(roles) == len(set(roles)) == len(REGISTRY.roles())
    assert len({c.name for c in COMPONENTS}) == len(COMPONENTS)


@pytest.mark.parametrize("os_release", [p for p in OS_RELEASES if supported(p)], ids=lambda p: p.name)
def test_every_component_names_its_things_on_every_supported_platform(os_release):
    platform = platform_from_os_release(os_release.read_text())
    for component in COMPONENTS:
        component.names(platform)       # no KeyError: every family and release has its entry
