"""Prefect flows: thin wiring of ``pipeline`` calls, in data-flow order."""
