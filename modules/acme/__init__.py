"""ACME certificates for the mail hosts: which names each host certifies, and the config that drives certbot."""
