"""DNS and email authentication records: generated from the stack config, validated, applied, verified."""
