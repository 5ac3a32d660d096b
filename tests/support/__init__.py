"""Builders of real components for tests (databases, app clients, servers)."""
