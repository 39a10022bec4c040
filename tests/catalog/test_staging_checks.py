"""The per-row checks of ``copy_slice`` (pure: no database): every field the database cannot
store is named, whichever text field carries a NUL."""

from __future__ import annotations

from typing import Any

import pytest

from dropship.catalog.staging import INT32_MAX, _json, _problem, document_json
from dropship.platforms.interfaces import ProductOption, SupplierProduct


def product(**kw: Any) -> SupplierProduct:
    fields: dict[str, Any] = dict(
        supplier="gentrade",
        supplier_sku="G1",
        name="상품",
        cost_price=1000,
        shipping_fee=2500,
        stock=5,
        status="active",
        category="001",
        images=("https://img/1.jpg",),
        options=(ProductOption("색상", "빨강", 0, 3, "G1-1"),),
    )
    fields.update(kw)
    return SupplierProduct(**fields)


def test_a_storable_product_has_no_problem() -> None:
    assert _problem(product()) is None
    assert _problem(product(cost_price=0, shipping_fee=INT32_MAX, stock=0)) is None


@pytest.mark.parametrize(
    ("field", "amount"),
    [
        ("cost_price", INT32_MAX + 1),
        ("shipping_fee", INT32_MAX + 1),
        ("stock", INT32_MAX + 1),
        ("stock", -1),
    ],
)
def test_each_out_of_range_amount_is_named(field: str, amount: int) -> None:
    assert _problem(product(**{field: amount})) == f"{field} {amount} is outside 0..{INT32_MAX}"


@pytest.mark.parametrize(
    "change",
    [
        {"supplier_sku": "G\x001"},
        {"name": "이름\x00"},
        {"category": "0\x0001"},
        {"images": ("https://img/1.jpg", "https://img/\x002.jpg")},
        {"options": (ProductOption("색\x00상", "빨강", 0, 3, "G1-1"),)},
        {"options": (ProductOption("색상", "빨\x00강", 0, 3, "G1-1"),)},
        {"options": (ProductOption("색상", "빨강", 0, 3, "G1-\x001"),)},
    ],
)
def test_a_nul_in_any_text_field_is_a_problem(change: dict[str, Any]) -> None:
    assert _problem(product(**change)) == "a text field contains a NUL character"


@pytest.mark.parametrize(
    "value",
    [
        [],
        ["https://img/1.jpg", 'a"b\\c', "줄\n바꿈\t탭", "\x00nul\x1f", "\u2028\ud7a3", ""],
        [
            {
                "name": "색상",
                "value": '빨강 "진한"',
                "price_delta": -500,
                "stock": 0,
                "supplier_option_code": None,
            },
            {"name": "x\x00", "value": "", "price_delta": 2**40, "stock": 3, "flag": True},
        ],
    ],
)
def test_document_json_is_the_text_of_the_general_encoder(value: list[Any]) -> None:
    # Content hashes are computed over this text: the fast encoder must give the same bytes.
    assert document_json(value) == _json(value)
    assert "\\u0000" not in document_json(value)
