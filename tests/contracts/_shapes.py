"""Comparing a documented JSON example with what a side produced, by shape (keys and JSON types,
recursively), not by value: the documents' examples carry example values, ours carry the test's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(platform: str, name: str) -> Any:
    """A rewritten documented example; keys starting with ``_`` are notes (its source)."""
    return json.loads((FIXTURES / platform / name).read_text(encoding="utf-8"))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def shape_gaps(documented: Any, actual: Any, path: str = "$") -> list[str]:
    """Where ``actual`` lacks a documented field or gives it another JSON type. ``null`` on
    either side matches any type (the documents show optional values as null); extra fields in
    ``actual`` are allowed; arrays compare their first elements."""
    if documented is None or actual is None:
        return []
    kind, actual_kind = _kind(documented), _kind(actual)
    if kind != actual_kind:
        return [f"{path}: documented {kind}, got {actual_kind}"]
    if kind == "object":
        gaps: list[str] = []
        for key, value in documented.items():
            if key.startswith("_"):
                continue
            if key not in actual:
                gaps.append(f"{path}.{key}: missing")
            else:
                gaps += shape_gaps(value, actual[key], f"{path}.{key}")
        return gaps
    if kind == "array" and documented and actual:
        return shape_gaps(documented[0], actual[0], f"{path}[0]")
    return []


def same_shape(documented: Any, actual: Any) -> list[str]:
    """Gaps in both directions (for requests: we send what is documented and nothing else)."""
    return shape_gaps(documented, actual) + [
        f"undocumented {gap.removesuffix(': missing')}" for gap in shape_gaps(actual, documented)
    ]
