"""One router per file; api.app includes them all under /v1 (health and metrics at the root)."""
