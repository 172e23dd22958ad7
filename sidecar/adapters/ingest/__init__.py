"""Events of sessions that live in another gateway (Baileys, Evolution API, WAHA), posted to
``/api/ingest/{format}/{accountId}`` and turned into the events neonize would have
delivered (docs/ingest.md)."""
