"""RackWarden agent package."""
