"""Prometheus metrics: every family declared once (:mod:`.families`), collectors that
read the core at scrape time, and the fast /metrics exposition. Imports the core and
the domain; nothing imports metrics but the composition root."""
