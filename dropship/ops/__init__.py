"""Operations: task metrics, safe task reprs, business figures, alerts, ``dropship status`` data,
the Prometheus exporter and the memory budget (docs/OPERATIONS.md)."""
