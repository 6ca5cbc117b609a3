"""Switch drivers: per-vendor pure CLI knowledge (registry) and the netmiko session that uses it."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from . import arista_eos, cisco_ios, hp_comware, huawei, juniper_junos, linux
from .base import (
    EXPECTED_ADMIN,
    HOST_KEY_MODES,
    AdminReading,
    AdminState,
    AuthenticationFailed,
    ChangeResult,
    ChangeScript,
    CommandRejected,
    DriverError,
    HostKeyRejected,
    InvalidPortName,
    PermanentDriverError,
    PortAction,
    SaveFailed,
    SaveResult,
    SaveSpec,
    SessionDropped,
    SwitchDriver,
    SwitchUnreachable,
    TransientDriverError,
    UnexplainedReply,
    UnknownVendor,
    VendorCli,
    WrongVendor,
    change_script,
    error_match,
    save_succeeded,
    unsafe_reason,
)

# Vendor name = module name = config value = netmiko device_type (STYLE.md 4).
DRIVERS: Mapping[str, VendorCli] = MappingProxyType(
    {
        cisco_ios.NAME: cisco_ios,
        arista_eos.NAME: arista_eos,
        huawei.NAME: huawei,
        hp_comware.NAME: hp_comware,
        juniper_junos.NAME: juniper_junos,
        linux.NAME: linux,
    }
)


def port_name_problem(vendor: str, name: str) -> str | None:
    """Why the `vendor` driver would refuse interface `name`, or None: check-config asks this,
    so a config that passes never fails when the driver is built from it."""
    try:
        vendor_cli(vendor).canonical_port(name)
    except InvalidPortName as exc:
        return exc.reason.split("; fix the inventory entry")[0]
    return None


def vendor_cli(name: str) -> VendorCli:
    """The registered vendor module for a config value; UnknownVendor names the choices."""
    try:
        return DRIVERS[name]
    except KeyError:
        raise UnknownVendor(
            f"unknown switch vendor {name!r}; use one of {', '.join(sorted(DRIVERS))}"
        ) from None


__all__ = [
    "DRIVERS",
    "EXPECTED_ADMIN",
    "HOST_KEY_MODES",
    "AdminReading",
    "AdminState",
    "AuthenticationFailed",
    "ChangeResult",
    "ChangeScript",
    "CommandRejected",
    "DriverError",
    "InvalidPortName",
    "PermanentDriverError",
    "PortAction",
    "SaveFailed",
    "SaveResult",
    "SaveSpec",
    "SessionDropped",
    "SwitchDriver",
    "SwitchUnreachable",
    "HostKeyRejected",
    "TransientDriverError",
    "UnexplainedReply",
    "UnknownVendor",
    "VendorCli",
    "WrongVendor",
    "change_script",
    "error_match",
    "port_name_problem",
    "save_succeeded",
    "unsafe_reason",
    "vendor_cli",
]
