"""The simulation tier: the whole agent on a simulated switch, simulated SNMP and a fake clock."""
