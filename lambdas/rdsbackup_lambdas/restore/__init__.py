"""Restore of snapshots into new (or replacing) DB instances and Aurora clusters with all their instances."""
