"""The four PostgreSQL tiers: connections, migrations, and the roles, databases and schemas as resources."""
