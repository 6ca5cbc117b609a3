"""RackWarden drivers.snmp package."""
