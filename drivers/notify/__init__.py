"""RackWarden drivers.notify package."""
