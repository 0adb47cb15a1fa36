"""The package's own state: sync cursors, delivery ledger, dead letters, run summaries."""
