"""pytest plugin (placeholder while the spine is built)."""
