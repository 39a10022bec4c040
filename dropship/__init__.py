"""dropship: collect supplier products, list them on marketplaces, forward orders exactly once."""

__version__ = "0.1.0"
