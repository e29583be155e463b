"""Hostwinds as Pulumi dynamic resources, one module each; this module keeps the old import path.

State written before the split pickled the providers as ``modules.hostwinds.resources.<Provider>``, so
these names must stay importable from here for as long as such state may exist.
"""

from modules.hostwinds.common import (
    GONE_STATES,
    HostwindsOwnershipError,
    Settings,
    catalogue,
    catalogue_failures,
    forget_listing,
    is_hostname,
    is_ready,
    resolve_image,
    settings_from,
    shared_listing,
    verify_owned,
    vps_label,
    wait_gone,
    wait_ready,
)
from modules.hostwinds.fleet_ready import FleetReady, FleetReadyProvider, wait_all
from modules.hostwinds.identity import FleetIdentity, FleetIdentityProvider
from modules.hostwinds.ssh_key import SshKey, SshKeyProvider
from modules.hostwinds.vps import (
    BILLING_CYCLES,
    LEDGER,
    VPS_KEYS,
    VPS_REPLACE_KEYS,
    VPS_UPDATE_KEYS,
    Vps,
    VpsProvider,
    choose_label,
    vps_failures,
    vps_outs,
)

__all__ = [
    "BILLING_CYCLES",
    "GONE_STATES",
    "LEDGER",
    "VPS_KEYS",
    "VPS_REPLACE_KEYS",
    "VPS_UPDATE_KEYS",
    "FleetIdentity",
    "FleetIdentityProvider",
    "FleetReady",
    "FleetReadyProvider",
    "HostwindsOwnershipError",
    "Settings",
    "SshKey",
    "SshKeyProvider",
    "Vps",
    "VpsProvider",
    "catalogue",
    "catalogue_failures",
    "choose_label",
    "forget_listing",
    "is_hostname",
    "is_ready",
    "resolve_image",
    "settings_from",
    "shared_listing",
    "verify_owned",
    "vps_failures",
    "vps_label",
    "vps_outs",
    "wait_all",
    "wait_gone",
    "wait_ready",
]
