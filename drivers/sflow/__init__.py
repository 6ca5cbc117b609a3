"""RackWarden drivers.sflow package."""
