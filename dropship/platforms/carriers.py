"""One carrier table for every platform: our canonical carrier ids, each market's
``deliveryCompanyCode`` for them, and the names/codes suppliers send for them.

Why one table: a tracking number travels supplier -> us -> market. The supplier names the carrier
its own way (OwnerClan ``shippingCompanyCode``, Zentrade ``delicom`` free text such as "CJ대한통운"
or "롯데택배(구 현대택배)"), each market wants its own code, and the two markets do not agree
(Naver has two convenience-store parcel codes, Coupang one of unclear identity; both still call
Lotte by its former owner's name ``HYUNDAI``). Parsing a supplier's text into our id first and
mapping our id to a market code second keeps each rule in one row.

Sources (docs/PLATFORMS.md "Carriers" has the table with its sources):

* Coupang: developer site "택배사 코드" (crawl in ``halion125-co/populer125``
  ``docs/coupang_openapi_ko.md``) and the invoice-upload document
  (``optionalg/coupang-developers.github.io``
  ``assets/docs/season-2/delivery-api/ko/invoice-upload-processing.document.ts``).
* Naver: the dispatch page's code table (``seller-dispatch-product-orders-pay-order-seller``,
  copy at file id 71060339404); Lotte is ``HYUNDAI`` and ``LOTTE`` is refused (implementer notes
  from real calls, file id 71297095581).

An unknown carrier is a :class:`PermanentError` naming the text: a tracking number must never be
pushed to a market under a guessed carrier (the buyer could not track the parcel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dropship.errors import PermanentError

MARKETS: tuple[str, ...] = ("coupang", "naver")


@dataclass(frozen=True)
class Carrier:
    """One carrier: our id, its Korean name, each market's code (None: the market has none)."""

    id: str
    name: str
    coupang: str | None
    naver: str | None
    # Other spellings suppliers (and people) use; our id, the name and the market codes are
    # always accepted too.
    aliases: tuple[str, ...] = ()

    def code_for(self, market: str) -> str:
        """The market's ``deliveryCompanyCode``; PermanentError when the market has none."""
        if market not in MARKETS:
            raise PermanentError(f"carriers: unknown market {market!r}; known: {MARKETS}")
        code: str | None = getattr(self, market)
        if code is None:
            raise PermanentError(f"{market} has no deliveryCompanyCode for carrier {self.name}")
        return code


CARRIERS: tuple[Carrier, ...] = (
    Carrier("cj", "CJ대한통운", "CJGLS", "CJGLS", ("CJ", "CJ택배", "대한통운", "CJ GLS")),
    # Lotte bought Hyundai Logistics; both markets kept the old code. ``LOTTE`` is not a market
    # code (Naver refuses it), only a supplier spelling.
    Carrier(
        "lotte",
        "롯데택배",
        "HYUNDAI",
        "HYUNDAI",
        ("롯데", "LOTTE", "롯데글로벌로지스", "현대택배", "롯데택배(구 현대택배)"),
    ),
    Carrier("hanjin", "한진택배", "HANJIN", "HANJIN", ("한진",)),
    Carrier("epost", "우체국택배", "EPOST", "EPOST", ("우체국", "우편", "KPOST")),
    # Logen's code is ``KGB`` on both markets (it absorbed KGB택배).
    Carrier("logen", "로젠택배", "KGB", "KGB", ("로젠", "LOGEN")),
    Carrier("kdexp", "경동택배", "KDEXP", "KDEXP", ("경동",)),
    Carrier("daesin", "대신택배", "DAESIN", "DAESIN", ("대신",)),
    Carrier("ilyang", "일양로지스", "ILYANG", "ILYANG", ("일양", "일양택배")),
    Carrier("chunil", "천일택배", "CHUNIL", "CHUNIL", ("천일", "천일특송", "CHUNILPS")),
    Carrier("hdexp", "합동택배", "HDEXP", "HDEXP", ("합동",)),
    # Convenience-store parcels: Naver names two (CVSNET = GS Postbox택배, CUPARCEL = CU편의점택배);
    # Coupang's single "CVS택배" is not documented as either, so neither maps to it.
    Carrier("gs_postbox", "GS Postbox택배", None, "CVSNET", ("GS편의점택배", "CVSNET")),
    Carrier("cu_parcel", "CU편의점택배", None, "CUPARCEL", ("CU택배", "CUPARCEL")),
)

_BY_ID: dict[str, Carrier] = {c.id: c for c in CARRIERS}

# Spellings that differ only in spaces, case, punctuation or a trailing "택배"/"(주)" are one.
_NOISE = re.compile(r"주식회사|\(주\)|㈜|[\s\-_.·()\[\]]")  # longest first


def _normal(text: str) -> str:
    key = _NOISE.sub("", text).upper()
    return key[: -len("택배")] if key.endswith("택배") and len(key) > len("택배") else key


def _index() -> dict[str, Carrier]:
    index: dict[str, Carrier] = {}
    for carrier in CARRIERS:
        spellings = (carrier.id, carrier.name, *carrier.aliases)
        codes = tuple(c for c in (carrier.coupang, carrier.naver) if c)
        for spelling in (*spellings, *codes):
            key = _normal(spelling)
            other = index.get(key)
            if other is not None and other is not carrier:
                raise RuntimeError(
                    f"carrier spelling {spelling!r} names {other.id} and {carrier.id}"
                )
            index[key] = carrier
    return index


_BY_SPELLING: dict[str, Carrier] = _index()


def carrier(text: str, *, source: str = "carrier") -> Carrier:
    """Our carrier for ``text``: our id, a Korean name, a known alias or a market code.
    ``source`` names where the text came from, for the error message."""
    if not isinstance(text, str) or not text.strip():
        raise PermanentError(f"{source}: no carrier given (empty carrier name/code)")
    found = _BY_ID.get(text.strip()) or _BY_SPELLING.get(_normal(text))
    if found is None:
        raise PermanentError(
            f"{source}: unknown carrier {text.strip()[:60]!r}; add it to "
            f"dropship/platforms/carriers.py (known: {', '.join(c.name for c in CARRIERS)})"
        )
    return found


def market_code(market: str, text: str) -> str:
    """The market's ``deliveryCompanyCode`` for a carrier given by id, name, alias or code."""
    return carrier(text, source=f"{market} tracking upload").code_for(market)


def from_ownerclan(shipping_company_code: str) -> Carrier:
    """OwnerClan's order product ``shippingCompanyCode`` (a code or the carrier's name)."""
    return carrier(shipping_company_code, source="ownerclan shippingCompanyCode")


def from_zentrade(delicom: str) -> Carrier:
    """Zentrade's ``<deli_info delicom="...">``: the carrier's name as free text."""
    return carrier(delicom, source="zentrade delicom")


def known_codes(market: str) -> frozenset[str]:
    """Every ``deliveryCompanyCode`` this table can send to ``market``."""
    return frozenset(c.code_for(market) for c in CARRIERS if getattr(c, market) is not None)


__all__ = [
    "CARRIERS",
    "Carrier",
    "carrier",
    "from_ownerclan",
    "from_zentrade",
    "known_codes",
    "market_code",
]
