"""A Pulumi program with only the Hostwinds fleet, from the stack's real config.

The fleet's engine tests and benchmark run it instead of the whole platform, so they test and measure the
fleet alone whatever else the platform declares; ``tests/integration/test_hostwinds_podman.py`` runs the
whole project.
"""

from __future__ import annotations

import pulumi

from modules.config.loader import load_stack_config
from modules.errors import ConfigError
from modules.hostwinds.fleet import VpsFleet

try:
    config = load_stack_config()
except ConfigError as error:
    raise pulumi.RunError(error.message) from None

fleet = VpsFleet("penguinmails-fleet", config.fleet)
pulumi.export("fleet_nodes", fleet.inventory)
