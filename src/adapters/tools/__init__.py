"""Tool implementations: the built-in business tools."""
