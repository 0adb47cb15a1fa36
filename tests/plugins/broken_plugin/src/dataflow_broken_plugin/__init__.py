"""Plugin kinds that cannot be used, each in its own way (for the plugin tests)."""
