"""Edges of the sidecar: neonize, SQLite, captures, HTTP."""
