"""The one carrier table: our ids -> each market's deliveryCompanyCode, and supplier carrier
names/codes -> our ids. Pure functions; the markets' own code lists come from the sandboxes,
which hold the published tables (a code we send that the market does not know is refused there).
"""

from __future__ import annotations

import pytest

from dropship.errors import PermanentError
from dropship.platforms import carriers
from dropship.platforms.coupang import carrier_code as coupang_code
from dropship.platforms.naver import carrier_code as naver_code
from dropship.sandbox.coupang import DELIVERY_COMPANIES as COUPANG_CODES
from dropship.sandbox.naver import DELIVERY_COMPANY_CODES as NAVER_CODES

# (our id, Coupang code, Naver code) for the carriers Korean suppliers actually use.
EXPECTED = [
    ("cj", "CJGLS", "CJGLS"),
    ("lotte", "HYUNDAI", "HYUNDAI"),  # Lotte keeps Hyundai's code on both markets
    ("hanjin", "HANJIN", "HANJIN"),
    ("epost", "EPOST", "EPOST"),
    ("logen", "KGB", "KGB"),
    ("kdexp", "KDEXP", "KDEXP"),
    ("daesin", "DAESIN", "DAESIN"),
    ("ilyang", "ILYANG", "ILYANG"),
    ("chunil", "CHUNIL", "CHUNIL"),
    ("hdexp", "HDEXP", "HDEXP"),
]


def test_a_carrier_one_market_lacks_is_refused_for_that_market_only() -> None:
    assert carriers.market_code("naver", "GS Postbox택배") == "CVSNET"
    assert carriers.market_code("naver", "CU편의점택배") == "CUPARCEL"
    with pytest.raises(PermanentError, match="coupang has no deliveryCompanyCode for carrier CU"):
        carriers.market_code("coupang", "CU편의점택배")


@pytest.mark.parametrize(("carrier_id", "coupang", "naver"), EXPECTED)
def test_our_ids_map_to_each_markets_code(carrier_id: str, coupang: str, naver: str) -> None:
    assert carriers.market_code("coupang", carrier_id) == coupang == coupang_code(carrier_id)
    assert carriers.market_code("naver", carrier_id) == naver == naver_code(carrier_id)


def test_every_code_we_can_send_is_in_the_markets_published_table() -> None:
    # The sandboxes hold the markets' published tables (Coupang's 택배사 코드 page, Naver's
    # dispatch page), and refuse any other code.
    assert carriers.known_codes("coupang") <= set(COUPANG_CODES)
    assert carriers.known_codes("naver") <= NAVER_CODES
    # Naver refuses LOTTE (TypeMismatch); Lotte must go out as HYUNDAI.
    assert "LOTTE" not in NAVER_CODES and "LOTTE" not in carriers.known_codes("naver")


@pytest.mark.parametrize(
    ("text", "carrier_id"),
    [
        # Zentrade <deli_info delicom="...">: free text as a person types it
        ("CJ대한통운", "cj"),
        ("CJ 대한통운", "cj"),  # Coupang's order sheets spell it with a space
        ("대한통운", "cj"),
        ("롯데택배", "lotte"),
        ("롯데택배 (구 현대택배)", "lotte"),
        ("현대택배", "lotte"),
        ("한진", "hanjin"),
        ("한진택배", "hanjin"),
        ("우체국", "epost"),
        ("우체국택배", "epost"),
        ("로젠택배", "logen"),
        ("  경동택배 ", "kdexp"),
        ("(주)대신택배", "daesin"),
        ("GS Postbox 택배", "gs_postbox"),
        # OwnerClan shippingCompanyCode and other code-style spellings
        ("CJGLS", "cj"),
        ("LOTTE", "lotte"),
        ("lotte", "lotte"),
        ("HYUNDAI", "lotte"),
        ("KGB", "logen"),
        ("LOGEN", "logen"),
        ("EPOST", "epost"),
        ("CVSNET", "gs_postbox"),
        ("CHUNILPS", "chunil"),
    ],
)
def test_supplier_spellings_parse_to_our_id(text: str, carrier_id: str) -> None:
    assert carriers.from_zentrade(text).id == carrier_id
    assert carriers.from_ownerclan(text).id == carrier_id


@pytest.mark.parametrize("text", ["비둘기택배", "DHLX", "07", "택배"])
def test_unknown_carrier_is_a_permanent_error_naming_it(text: str) -> None:
    with pytest.raises(PermanentError, match="unknown carrier") as caught:
        carriers.from_zentrade(text)
    assert repr(text) in str(caught.value) and "zentrade delicom" in str(caught.value)
    with pytest.raises(PermanentError, match=f"coupang tracking upload: unknown carrier '{text}'"):
        coupang_code(text)
    with pytest.raises(PermanentError, match=f"naver tracking upload: unknown carrier '{text}'"):
        naver_code(text)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_carrier_is_refused(text: str) -> None:
    with pytest.raises(PermanentError, match="ownerclan shippingCompanyCode: no carrier"):
        carriers.from_ownerclan(text)


def test_every_spelling_names_one_carrier() -> None:
    # Built at import: two carriers claiming one spelling would make parsing ambiguous.
    for carrier in carriers.CARRIERS:
        codes = [c for c in (carrier.coupang, carrier.naver) if c]
        for spelling in (carrier.id, carrier.name, *carrier.aliases, *codes):
            assert carriers.carrier(spelling).id == carrier.id
    with pytest.raises(PermanentError, match="unknown market"):
        carriers.CARRIERS[0].code_for("gmarket")
