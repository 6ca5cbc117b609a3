"""The lab: a data centre in network namespaces with real snmpd, sshd and traffic."""
