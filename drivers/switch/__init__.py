"""RackWarden drivers.switch package."""
