"""RackWarden drivers package."""
