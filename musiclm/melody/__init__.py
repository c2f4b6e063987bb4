"""melody."""
