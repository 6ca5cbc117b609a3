"""RackWarden drivers.capture package."""
