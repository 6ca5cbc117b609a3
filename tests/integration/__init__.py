"""Integration tests against real parts (snmpd, namespaces, kernel counters)."""
