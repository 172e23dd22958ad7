"""Domain logic: classification, account state, verdicts. No I/O here."""
