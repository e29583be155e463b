"""Backups with PITR (pgBackRest to S3), restore and the restore drill."""
