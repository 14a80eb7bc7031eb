"""The plan the spec tests compare: a full `deploy` (every component, in stack order) on fresh hosts."""

from __future__ import annotations

import dataclasses

from fabfile.components import COMPONENTS
from fabfile.core.facts import platform_from_os_release
from fabfile.core.offline import PlannedStep, plan_offline


def deploy_plan(inv, os_release_text: str) -> dict[str, list[PlannedStep]]:
    """`cluster.python_version` follows the platform, as a user deploying to it must set it (core/facts.py)."""
    python = platform_from_os_release(os_release_text).python_version or inv.cluster["python_version"]
    inv = dataclasses.replace(inv, cluster={**inv.cluster, "python_version": python})
    return plan_offline(inv, os_release_text, COMPONENTS)
