"""Persistence: engine, models, migrations, key store, encrypted message store."""
