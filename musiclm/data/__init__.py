"""data."""

PROCEDURAL = "procedural"  # the --data value that means procedural music instead of files
