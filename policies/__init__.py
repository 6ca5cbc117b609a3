"""RackWarden policies package."""
