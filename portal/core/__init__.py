"""Cross-cutting pieces: pages every section shares, health checks, API conventions, demo data."""
