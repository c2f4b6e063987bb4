"""mulan."""
