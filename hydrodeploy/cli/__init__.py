"""Command-line verbs."""
