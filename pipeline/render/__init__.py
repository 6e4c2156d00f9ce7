"""Rendering: Jinja templates -> HTML -> PDF, in worker processes."""
