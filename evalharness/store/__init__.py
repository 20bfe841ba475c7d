"""The run store and what keys it: SQLite runs and caches, model and judge identity, provenance."""
