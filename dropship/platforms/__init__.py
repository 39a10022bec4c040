"""Platform connectors (suppliers and marketplaces) and their shared plumbing: HTTP with retries,
the distributed rate limiter, the response cache, settings and the connector registry.

Production code: nothing here imports ``dropship.sandbox``.
"""
