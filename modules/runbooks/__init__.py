"""On-call runbooks: the playbooks under ``ansible/playbooks/runbooks/`` and how to run them safely."""
