"""Data: shard formats, DataModules and the embedded demo data."""
