"""IP reputation: DNSBL checks of the sending IPs, their results in OLTP, and quarantine of listed IPs."""
