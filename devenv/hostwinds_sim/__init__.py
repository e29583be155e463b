"""A local stand-in for the Hostwinds Cloud API, for the dev stack, the tests and the benchmarks.

``model`` holds the account (instances and their state machine, IPs, rDNS, firewall, SSH keys, upgrade
orders) and answers actions with the real API's shapes; ``backends`` decides what an instance *is* (nothing
but a record, or a real podman container reachable over SSH); ``server`` is the HTTP front end with fault
injection, the call log and the ``/_sim/…`` admin endpoints. ``python -m devenv.hostwinds_sim --help``.
"""
