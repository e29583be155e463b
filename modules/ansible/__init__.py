"""Ansible for the mail hosts: inventory from the fleet, ansible-runner runs, the AnsiblePlaybook resource."""
