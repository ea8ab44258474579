"""The REST API's pure core: token format and digests (no Django)."""
