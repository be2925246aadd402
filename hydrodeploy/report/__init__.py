"""Run directories, tables and plots rendered from measured points."""
