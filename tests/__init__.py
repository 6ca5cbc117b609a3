"""RackWarden tests: unit, integration and the namespace lab."""
