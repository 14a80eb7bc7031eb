"""The plan the spec tests compare: a full `deploy` (every component, in stack order) on fresh hosts."""

from __future__ import annotations

from fabfile.components import COMPONENTS
from fabfile.core.offline import PlannedStep, plan_offline


def deploy_plan(inv, os_release_text: str) -> dict[str, list[PlannedStep]]:
    return plan_offline(inv, os_release_text, COMPONENTS)
