"""dropship: collect supplier products, list them on marketplaces, forward orders exactly once."""

__version__ = "0.1.0"

# Every process that imports dropship (CLI, workers, beat, Flower) redacts secrets from log
# records, whoever configures logging (see dropship/logsafe.py).
from dropship import logsafe as _logsafe

_logsafe.install()
