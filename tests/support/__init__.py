"""Helpers shared by the unit, infra and end-to-end tests."""
