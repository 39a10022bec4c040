"""gentrade connector: the **Zentrade** (젠트레이드) product and order-lookup APIs.

The supplier is Zentrade; the code calls it ``gentrade`` (module, account and platform names).
Source of every shape below: the Zentrade API guide (file id 15186231462) and
docs/PLATFORMS.md ("gentrade = Zentrade").

* Catalog: ``GET {base_url}/shop/proc/product_api.php?id=ID&m_skey=KEY`` (GET or POST), optional
  ``goodsno`` (one product), ``runout`` (``1`` only sold out, ``0`` only on sale),
  ``opendate_s``/``opendate_e`` (``yyyy-MM-dd``, both or neither). The answer is one XML document
  declared ``encoding="euc-kr"``: ``<zentrade version="ZENTRADE XML 1.0">`` with one
  ``<product code>`` per product (:func:`parse_record`). There is no stock count, only
  ``<status runout>``: an on-sale product gets the account's assumed stock
  (``SupplierProduct.stock_assumed``).
* Options: ``<option opt1nm>`` CDATA rows ``label^|^price^|^consumer price^|^image url``
  separated by ``↑=↑``; the prices are **full prices**, stored as ``price_delta`` to ``buyprice``;
  the row label identifies the option on the purchase-order sheet (``supplier_option_code``).
* Orders: Zentrade has **no order-creation or cancel API**. Purchase orders go out on a
  purchase-order sheet uploaded at Zentrade with ``pordno`` = our order key (built by the orders
  flow); ``place_order``/``cancel_order`` raise :class:`OrderingNotSupportedError`.
  ``order_api.php?pordno=KEY`` looks an order up; ``<deli_info delicom delinum>`` is tracking.

**A feed never breaks on one bad record.** The document is split into records at the byte
level (:class:`FeedReader`) before any XML parser sees it: the markers ``<product`` and
``</product>`` are ASCII starting with ``<`` (0x3C), a byte that is never part of a multi-byte
EUC-KR/CP949 character, so they can be found in the raw bytes without decoding. Each record is
then decoded and parsed *on its own* by lxml with no entities, DTD or network, so a broken byte,
a control character, an unclosed CDATA or a bad entity costs exactly that record: it comes out as
an :class:`InvalidRecord` with its raw bytes (first 4 KiB, escaped) and a precise reason, and the
next ``<product>`` parses normally. Memory is bounded by one record (at most
``max_record_bytes``), whatever the catalog size (``bench/gentrade_memory.py``).

Account settings: credentials ``id`` and ``key`` (sent as ``id``/``m_skey``); options
``assumed_stock`` (stock of an on-sale product, default 10), ``shipping_fee`` (KRW, default 0:
the feed carries no shipping fee) and ``feed_shards`` (default 2: a full collect is that many
slices, each reading the whole document and parsing the products of its shard of codes; see
:meth:`GentradeConnector.plan_slices` and :meth:`FeedReader._owned`).
"""

from __future__ import annotations

import codecs
import hashlib
import http.client
import logging
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import requests
import urllib3.exceptions
from lxml import etree

from dropship.errors import (
    ConfigurationError,
    OrderingNotSupportedError,
    PermanentError,
    TransientError,
)
from dropship.platforms._supplier_common import KST, SupplierConnectorBase
from dropship.platforms.cache import ResponseCache
from dropship.platforms.config import AccountSettings
from dropship.platforms.http import PlatformHttp
from dropship.platforms.interfaces import (
    CollectSlice,
    InvalidRecord,
    KnownFingerprints,
    ProductOption,
    PurchaseOrderRequest,
    PurchaseOrderResult,
    ShipmentInfo,
    SupplierProduct,
    UnchangedRecord,
)

log = logging.getLogger(__name__)

SUPPLIER = "gentrade"
FEED_PATH = "/shop/proc/product_api.php"
ORDER_PATH = "/shop/proc/order_api.php"
FEED_VERSION = "ZENTRADE XML 1.0"
ORDER_VERSION = "ZENTRADE ORDER XML 1.0"
CHUNK_BYTES = 64 * 1024
# A real record is a few KiB (the detail page is a list of <img> tags); 1 MiB is generous and
# still keeps one record's bytes, text and tree far below the worker's memory.
MAX_RECORD_BYTES = 1024 * 1024
RAW_BYTES = 4096  # what an InvalidRecord keeps of the record
MAX_PROLOGUE_BYTES = 64 * 1024
DEFAULT_ASSUMED_STOCK = 10
# A full run reads the document once per shard, each read parsing a share of the products
# (one per core of a 2-core worker host); more shards only download the document more often.
DEFAULT_FEED_SHARDS = 2
MAX_FEED_SHARDS = 16
MAX_STOCK = 1_000_000
MIN_PRICE, MAX_PRICE = 1, 100_000_000  # KRW; 0 or above 100 million is a data error
# Part of every source fingerprint: bump it with any change to what a record's bytes are parsed
# into (decoding, the shape checks, parse_record, parse_options), so every record is parsed
# again by the next collect instead of being taken as unchanged.
PARSE_VERSION = 1
# Records held back per fingerprint look-up (and at most this many bytes of them).
FINGERPRINT_BATCH_RECORDS = 1000
FINGERPRINT_BATCH_BYTES = 8 * 1024 * 1024
OPTION_ROW_SEPARATOR = "↑=↑"
OPTION_FIELD_SEPARATOR = "^|^"

# A stream cut mid-body: requests wraps urllib3's ProtocolError/IncompleteRead in
# ChunkedEncodingError, but raw reads and some versions let them through.
STREAM_CUT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.IncompleteRead,
    urllib3.exceptions.ReadTimeoutError,
    http.client.IncompleteRead,
)


# --------------------------------------------------------------------------- record splitting

_OPEN = re.compile(rb"<product(?=[\s>/])")
_CLOSE = re.compile(rb"</product\s*>")
_ROOT_CLOSE = re.compile(rb"</zentrade\s*>")
_MARKER_TAIL = 16  # bytes kept when a marker may straddle two chunks
_ROOT_OPEN = re.compile(rb"<zentrade(?=[\s>/])([^>]*)>")
_DECLARATION = re.compile(rb"^<\?xml\s[^>]*?\?>")
_DECLARED_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_VERSION_ATTR = re.compile(rb"""version\s*=\s*["']([^"']*)["']""")
_COMMENTS = re.compile(rb"<!--.*?-->", re.DOTALL)
# Prologue items a product document may carry and we ignore: processing instructions and a
# DOCTYPE (never read: records are parsed without it, so its entities cannot expand).
_PROLOGUE_MISC = re.compile(rb"<\?.*?\?>|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# The bytes _CONTROL finds, deleted by bytes.translate: a shorter result means the record has
# one (a C loop, several times faster than a regex scan of the record).
_CONTROL_RAW = bytes(b for b in range(0x20) if b not in b"\t\n\r")
# Encodings in which a byte below 0x20 is always that control character (never part of a
# multi-byte sequence), so _CONTROL_RAW on the undecoded record finds exactly what _CONTROL
# finds in its text.
_CONTROL_SAFE_ENCODINGS = frozenset({"cp949", "utf-8", "ascii", "euc_kr"})
_CONTROL_BYTES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Labels Korean sites put on CP949 text. CP949 (Windows "UHC") is a superset of EUC-KR, and the
# WHATWG encoding standard decodes the "euc-kr" label as windows-949 for the same reason:
# servers declaring euc-kr routinely send UHC syllables (e.g. 똠, 햏) that strict EUC-KR lacks.
_CP949_LABELS = frozenset(
    {"euc-kr", "euc_kr", "euckr", "cp949", "ms949", "uhc", "windows-949", "x-windows-949",
     "ks_c_5601-1987", "ks_c_5601", "ksc5601", "korean", "csksc56011987"}
)  # fmt: skip


def _has_control_bytes(data: bytes) -> bool:
    return len(data.translate(None, _CONTROL_RAW)) != len(data)


def _escape_raw(data: bytes, encoding: str) -> str:
    """Bytes as JSON-safe, readable text: decoded where possible, every undecodable byte as
    ``\\xNN`` and every control character as ``\\xNN`` (PostgreSQL JSONB refuses ``\\u0000``);
    backslashes are doubled first so the escaping is unambiguous (0x5C is never a CP949 trail
    byte)."""
    text = data.replace(b"\\", b"\\\\").decode(encoding, errors="backslashreplace")
    return _CONTROL_BYTES.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _short(message: str, limit: int = 300) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def _encoding_for(label: str) -> str | None:
    if label.lower() in _CP949_LABELS:
        return "cp949"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


@dataclass
class _Unit:
    """A piece of the document to turn into records: one ``<product>`` (possibly with what
    follows it up to the next one) or a run of bytes that belongs to no product."""

    offset: int
    data: bytes
    kind: str = "record"  # record | unclosed | oversized | garbage | truncated


@dataclass
class _Work:
    """A record unit to turn into one record: it ends at its ``closes_needed``-th
    ``</product>``; ``ends`` are where each ``</product>`` of ``unit.data`` ends."""

    unit: _Unit
    closes_needed: int
    ends: list[int]
    # Sharded reads: set when the record's owner is known only once it is parsed (no code
    # readable from its start tag): every shard parses it, only the owner yields it.
    contested: bool = False
    # The code read from the start tag (_code_hint), once looked up ("" = not yet).
    hint: str | None = ""

    def code_hint(self) -> str | None:
        if self.hint == "":
            self.hint = _code_hint(self.unit.data)
        return self.hint


class _SeenCodes:
    """Product codes already yielded in this document, for duplicate detection. Zentrade codes
    are small integers (``goodsno``), kept as a bitmap (1 MiB covers 8 million codes), so this
    does not grow with the number of products; other codes go to a set."""

    _BITMAP_LIMIT = 1 << 26

    def __init__(self) -> None:
        self.bits = bytearray()
        self.other: set[str] = set()

    def add(self, code: str) -> bool:
        """Record ``code``; ``False`` when it was already there."""
        if code.isdigit() and (code == "0" or code[0] != "0") and len(code) < 9:
            number = int(code)
            if number < self._BITMAP_LIMIT:
                byte, bit = divmod(number, 8)
                if byte >= len(self.bits):
                    self.bits.extend(bytes(byte + 1 - len(self.bits)))
                if self.bits[byte] >> bit & 1:
                    return False
                self.bits[byte] |= 1 << bit
                return True
        if code in self.other:
            return False
        self.other.add(code)
        return True


class FeedReader:
    """Reads one Zentrade product document from byte chunks, one record at a time.

    Iterating yields every product as a :class:`SupplierProduct` and every bad record, stray
    content or cut tail as an :class:`InvalidRecord`; it never raises for the content of the
    document. Only a body that is not a ``<zentrade>`` document at all raises
    :class:`TransientError` (an HTML error page, an empty body). After iteration,
    :attr:`truncated` tells whether the document ended without ``</zentrade>`` (the catalog is
    incomplete; the connector then raises :class:`TransientError`).

    Splitting: a record runs from one ``<product`` marker to the next (or to ``</zentrade>``);
    its ``</product>`` ends it and anything non-blank after that is stray content (one reject of
    its own; see :meth:`_record` for a unit with more than one ``</product>``). A record
    without ``</product>`` is held back one step: if the next one closes twice, the two were
    one record with a ``<product>`` nested inside (one reject); otherwise the first one was
    unclosed (one reject) and the next is parsed normally. So an unclosed CDATA, a missing end
    tag or a nested product never swallows the records after it.
    A ``<product`` written literally inside a CDATA section would split that record (two
    rejects); Zentrade's CDATA holds names, option rows and HTML, where it does not occur.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        assumed_stock: int = DEFAULT_ASSUMED_STOCK,
        shipping_fee: int = 0,
        max_record_bytes: int = MAX_RECORD_BYTES,
        known: KnownFingerprints | None = None,
        batch_records: int = FINGERPRINT_BATCH_RECORDS,
        batch_bytes: int = FINGERPRINT_BATCH_BYTES,
        shard: int = 0,
        shards: int = 1,
    ) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not one of 0..{shards - 1}")
        self._chunks = iter(chunks)
        self.shard = shard
        self.shards = shards
        self.assumed_stock = assumed_stock
        self.shipping_fee = shipping_fee
        self.max_record_bytes = max_record_bytes
        self.encoding = "cp949"
        self.fallback_encoding: str | None = None
        self.version: str | None = None
        self.truncated = False
        self._empty_root = False
        self.products = 0
        self.rejects = 0
        # Of ``products``: yielded as UnchangedRecord, not parsed (fingerprint known).
        self.unparsed = 0
        self._known = known
        self.batch_records = max(1, batch_records)
        self.batch_bytes = batch_bytes
        self._fingerprint_base: Any = None
        self._seen = _SeenCodes()
        # One parser for the whole document: a fresh XMLParser per record set up a new libxml2
        # context each time, about half the cost of parsing a record. A reader is used by one
        # thread (lxml parsers must not be shared between threads).
        self._parser = _record_parser()
        # Control characters can be looked for in the raw bytes (a C scan, no decoding) when no
        # multi-byte sequence of the document's encodings can contain a byte below 0x20: true
        # of UTF-8 and CP949/EUC-KR, whose trail bytes are 0x41..0xFE.
        self._control_in_bytes = False
        # The code of the record being turned into one (parsed, or taken as unchanged), for
        # the owner of a contested record.
        self._record_code: str | None = None

    # ---- bytes -> units

    def _units(self) -> Iterator[_Unit]:
        buf = bytearray()
        base = 0  # document offset of buf[0]
        exhausted = False

        def more() -> bool:
            nonlocal exhausted
            for chunk in self._chunks:
                if chunk:
                    buf.extend(chunk)
                    return True
            exhausted = True
            return False

        # Prologue: BOM, declaration, <zentrade ...>, up to the first record.
        while True:
            start = _OPEN.search(buf)
            end = _ROOT_CLOSE.search(buf)
            if start or end or len(buf) > MAX_PROLOGUE_BYTES or not more():
                break
        first = min((m.start() for m in (start, end) if m), default=len(buf))
        garbage = self._read_prologue(bytes(buf[:first]))
        if garbage is not None:
            yield _Unit(garbage[0], garbage[1], "garbage")
        del buf[:first]
        base = first
        if self._empty_root:
            # <zentrade/>: no records; what follows is the epilogue, as after </zentrade>.
            buf[:0] = b"</zentrade>"
            base -= len(b"</zentrade>")

        scan = 1  # where to look for the next marker (past the current record's own)
        skipping = False  # inside an oversized record: drop bytes up to the next marker
        while buf or not exhausted:
            if not buf and not more():
                break
            nxt = _OPEN.search(buf, scan)
            # Only up to the next record: searching the whole buffer for each record would be
            # quadratic in the chunk size.
            root_end = _ROOT_CLOSE.search(
                buf, 0 if skipping else scan - 1, nxt.start() if nxt else len(buf)
            )
            if root_end and (nxt is None or root_end.start() < nxt.start()):
                if not skipping and root_end.start() > 0:
                    yield _Unit(base, bytes(buf[: root_end.start()]))
                # After </zentrade>: only blanks and comments belong there. Keep at most
                # RAW_BYTES of anything else and drain the rest, so a stream that is cut late is
                # still noticed (iter_content raises).
                epilogue = bytes(buf[root_end.end() :])
                epilogue_offset = base + root_end.end()
                buf.clear()
                for chunk in self._chunks:
                    if len(epilogue) < 2 * RAW_BYTES:
                        epilogue += chunk[: 2 * RAW_BYTES]
                stray = _COMMENTS.sub(b"", epilogue).strip()
                if stray:
                    yield _Unit(epilogue_offset, stray[:RAW_BYTES], "garbage")
                return
            if nxt is not None:
                if skipping:
                    pass
                elif nxt.start() > self.max_record_bytes:
                    yield _Unit(base, bytes(buf[:RAW_BYTES]), "oversized")
                else:
                    yield _Unit(base, bytes(buf[: nxt.start()]))
                skipping = False
                base += nxt.start()
                del buf[: nxt.start()]  # the streaming clean-up: nothing before it is kept
                scan = 1
                continue
            if skipping:
                keep = min(len(buf), _MARKER_TAIL)
                base += len(buf) - keep
                del buf[: len(buf) - keep]
                scan = 0
            elif len(buf) > self.max_record_bytes:
                yield _Unit(base, bytes(buf[:RAW_BYTES]), "oversized")
                skipping = True
                keep = min(len(buf), _MARKER_TAIL)
                base += len(buf) - keep
                del buf[: len(buf) - keep]
                scan = 0
                continue
            else:
                scan = max(1, len(buf) - _MARKER_TAIL)
            if not more():
                break
        # The stream ended without </zentrade>. A last record that is complete is still read.
        self.truncated = True
        if buf and not skipping:
            yield _Unit(base, bytes(buf), "record" if _CLOSE.search(buf) else "truncated")

    def _read_prologue(self, head: bytes) -> tuple[int, bytes] | None:
        """Set the document encoding from the BOM or the declaration and check the root
        element; returns stray bytes found between the root start tag and the first record."""
        offset = 0
        bom_encoding = None
        if head.startswith(codecs.BOM_UTF8):
            bom_encoding, offset = "utf-8", len(codecs.BOM_UTF8)
        elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            if not head[2:].lstrip().startswith((b"<?xml", b"<zentrade", b"<!--")):
                raise TransientError("gentrade feed is UTF-16 (Zentrade documents are EUC-KR)")
            # Two stray bytes in front of an 8-bit document (real UTF-16 would read <\0?\0).
            offset = 2
            log.warning("gentrade feed: a UTF-16 byte-order mark before an 8-bit document")
        body = head[offset:].lstrip()
        declared = None
        declaration = _DECLARATION.match(body)
        if declaration:
            label = _DECLARED_ENCODING.search(declaration.group())
            if label:
                declared = _encoding_for(label.group(1).decode("ascii"))
                if declared is None:
                    raise TransientError(
                        f"gentrade feed declares an unknown encoding {label.group(1)[:40]!r}"
                    )
            body = body[declaration.end() :]
        # The BOM decides (XML 1.0 appendix F); a record that is not valid in the BOM's
        # encoding but is in the declared one is still read (and the mismatch logged once).
        self.encoding = bom_encoding or declared or "cp949"
        if bom_encoding and declared and declared != bom_encoding:
            self.fallback_encoding = declared
            log.warning(
                "gentrade feed: byte-order mark says %s but the declaration says %s",
                bom_encoding,
                declared,
            )
        elif self.encoding == "utf-8" and not bom_encoding:
            # Zentrade documents are EUC-KR: a UTF-8 label without a BOM is in doubt, so a
            # record that is not UTF-8 but is valid CP949 is read as CP949. (Not the other way
            # round: UTF-8 bytes are often valid CP949 pairs, so that would read mojibake.)
            self.fallback_encoding = "cp949"
        self._control_in_bytes = self.encoding in _CONTROL_SAFE_ENCODINGS and (
            self.fallback_encoding is None or self.fallback_encoding in _CONTROL_SAFE_ENCODINGS
        )
        body = _PROLOGUE_MISC.sub(b"", _COMMENTS.sub(b"", body))
        root = _ROOT_OPEN.search(body)
        if root is None or body[: root.start()].strip():
            # An error page or an empty body, not a product document (the content is not
            # quoted: it could echo our query string).
            raise TransientError(
                "gentrade feed is not a <zentrade> product document"
                + (" (empty body)" if not head.strip() else "")
            )
        self._empty_root = root.group(1).rstrip().endswith(b"/")  # <zentrade ... />
        version = _VERSION_ATTR.search(root.group(1))
        self.version = version.group(1)[:40].decode("ascii", "replace") if version else None
        if self.version != FEED_VERSION:
            log.warning("gentrade feed: unexpected document version %r", self.version)
        stray = body[root.end() :].strip()
        if stray:
            return max(0, head.find(stray[:16])), stray[:RAW_BYTES]
        return None

    # ---- units -> records

    def __iter__(self) -> Iterator[SupplierProduct | InvalidRecord | UnchangedRecord]:
        if self._known is None:
            for item in self._owned():
                if isinstance(item, _Work):
                    yield from self._emit(item) if item.contested else self._record(item)
                else:
                    yield item
            return
        # With fingerprints: a batch of records is held back, their stored fingerprints are
        # looked up at once, then the batch is yielded in document order.
        batch: list[_Work | InvalidRecord] = []
        size = 0
        for item in self._owned():
            batch.append(item)
            if isinstance(item, _Work):
                size += len(item.unit.data)
            if len(batch) >= self.batch_records or size >= self.batch_bytes:
                yield from self._resolve(batch)
                batch, size = [], 0
        yield from self._resolve(batch)

    def _owned(self) -> Iterator[_Work | InvalidRecord]:
        """:meth:`_work` restricted to this reader's shard (all of it when ``shards`` is 1).

        Every shard splits the whole document (cheap: byte searches), so they all see the same
        records, but each parses only its own: a record whose code can be read from its start
        tag belongs to shard ``feed_shard(code)``, so every copy of a code, duplicates
        included, lands in one shard and the duplicate check works as in a whole read. A
        reject that belongs to no record (stray content, an unclosed, cut or oversized record)
        is shard 0's. A record without a readable code is *contested*: every shard parses it
        and only its owner yields it (:meth:`_emit`): shard ``feed_shard(code)`` for a product
        or a duplicate of ``code``, shard 0 for any other reject. So a product written as
        ``code="&#53;00001"`` is still checked against the other copies of ``500001``.
        The code is read from the bytes only where that gives the code the parser reads
        (:attr:`_control_in_bytes`: CP949, EUC-KR, UTF-8, ASCII, in which the bytes of ``<``,
        quotes, ``=`` and blanks are always those characters); in any other encoding every
        record is contested (correct, each shard parsing everything)."""
        for item in self._work():
            if self.shards == 1:
                yield item
            elif isinstance(item, InvalidRecord):
                if self.shard == 0:
                    yield item
                else:
                    self.rejects -= 1  # shard 0 reports it
            else:
                code = item.code_hint() if self._control_in_bytes else None
                if code is None:
                    item.contested = True
                    yield item
                elif feed_shard(code, self.shards) == self.shard:
                    yield item

    def _emit(
        self,
        work: _Work,
        *,
        fingerprint: str | None = None,
        unchanged: tuple[str, str] | None = None,
    ) -> Iterator[SupplierProduct | InvalidRecord | UnchangedRecord]:
        """:meth:`_record` for a contested record (see :meth:`_owned`): yielded only by its
        owner; the other shards leave it out of their counts too. (Their
        duplicate check may note its code: harmless, a code is only ever yielded by its own
        shard.)"""
        counts = (self.products, self.rejects, self.unparsed)
        self._record_code = None
        results = list(self._record(work, fingerprint=fingerprint, unchanged=unchanged))
        code = self._record_code
        owner = feed_shard(code, self.shards) if code is not None else 0
        if owner == self.shard:
            yield from results
        else:
            self.products, self.rejects, self.unparsed = counts

    def _work(self) -> Iterator[_Work | InvalidRecord]:
        """The document as record units to parse and the rejects between them, in order."""
        pending: list[_Unit] = []  # records without </product>, held back one step
        for unit in self._units():
            if unit.kind != "record":
                if pending:
                    yield from self._flush(pending, "unclosed")
                yield self._reject_unit(unit)
                continue
            ends = [m.end() for m in _CLOSE.finditer(unit.data)]
            closes = len(ends)
            if closes == 0:
                pending.append(unit)
                if sum(len(u.data) for u in pending) > self.max_record_bytes:
                    yield self._reject_unit(_Unit(pending[0].offset, pending[0].data, "unclosed"))
                    del pending[0]
                continue
            if closes > 1 and pending:
                # Nested <product>: the held-back opening(s) and this unit are one record.
                take = min(closes - 1, len(pending))
                merged = pending[-take:]
                yield from self._flush(pending[:-take], "unclosed")
                pending = []
                head = b"".join(u.data for u in merged)
                unit = _Unit(merged[0].offset, head + unit.data)
                ends = [len(head) + end for end in ends]  # the held-back parts have no close
                closes_needed = take + 1
            else:
                if pending:  # (no generator per record for the common case)
                    yield from self._flush(pending, "unclosed")
                    pending = []
                closes_needed = 1
            yield _Work(unit, closes_needed, ends)
        yield from self._flush(pending, "truncated" if self.truncated else "unclosed")

    def _resolve(
        self, batch: list[_Work | InvalidRecord]
    ) -> Iterator[SupplierProduct | InvalidRecord | UnchangedRecord]:
        """Yield ``batch`` in order, records whose (code, fingerprint) ``known`` reports as
        :class:`UnchangedRecord` without parsing them. Only a plain record (one
        ``</product>``, a code readable from its start tag) has a fingerprint; a stored product
        only ever has the fingerprint of bytes that parsed into it, so a match means parsing
        would give that product again (and the code read from the start tag is its code)."""
        assert self._known is not None
        keys: dict[int, tuple[str, str]] = {}
        for index, item in enumerate(batch):
            if isinstance(item, _Work) and item.closes_needed == 1 and len(item.ends) == 1:
                code = item.code_hint()
                if code is not None:
                    keys[index] = (code, self._fingerprint(item.unit.data[: item.ends[0]]))
        known = set(self._known(list(keys.values()))) if keys else set()
        for index, item in enumerate(batch):
            if not isinstance(item, _Work):
                yield item
                continue
            key = keys.get(index)
            # (_emit only for a contested record: one generator less for every other one)
            emit = self._emit if item.contested else self._record
            if key is not None and key in known:
                yield from emit(item, unchanged=key)
            else:
                yield from emit(item, fingerprint=key[1] if key else None)

    def _fingerprint(self, data: bytes) -> str:
        """BLAKE2b-128 of the record's bytes and of everything else its parse depends on."""
        if self._fingerprint_base is None:
            base = hashlib.blake2b(digest_size=16, person=b"zentrade")
            inputs = (
                PARSE_VERSION,
                self.encoding,
                self.fallback_encoding,
                self._control_in_bytes,
                self.assumed_stock,
                self.shipping_fee,
            )
            base.update(repr(inputs).encode("ascii"))
            self._fingerprint_base = base
        digest = self._fingerprint_base.copy()
        digest.update(data)
        return f"{PARSE_VERSION}:{digest.hexdigest()}"

    def _flush(self, pending: list[_Unit], kind: str) -> Iterator[InvalidRecord]:
        for unit in pending:
            yield self._reject_unit(_Unit(unit.offset, unit.data, kind))
        pending.clear()

    def _record(
        self,
        work: _Work,
        *,
        fingerprint: str | None = None,
        unchanged: tuple[str, str] | None = None,
    ) -> Iterator[SupplierProduct | InvalidRecord | UnchangedRecord]:
        """The record ends at its ``closes_needed``-th ``</product>``. A unit with more closes
        than that has either a stray ``</product>`` after the record (stray content) or one
        written inside a CDATA section: the whole unit is tried first, and if it is no product
        the record ends at the expected close and the rest is stray content (one reject).
        ``unchanged`` (code, fingerprint): the record is not parsed (see :meth:`_resolve`)."""
        unit, closes_needed, ends = work.unit, work.closes_needed, work.ends
        self._record_code = None
        # ends: where each </product> of unit.data ends (the caller checked there is one)
        end = ends[-1]
        result: SupplierProduct | InvalidRecord | UnchangedRecord
        if unchanged is not None:
            result = self._unchanged(unit.offset, unit.data[:end], *unchanged)
        else:
            result = self._parse(unit.offset, unit.data[:end], fingerprint)
        if len(ends) > closes_needed and isinstance(result, InvalidRecord):
            self.rejects -= 1  # that attempt is not reported
            end = ends[closes_needed - 1]
            # _record_code stays that of the first attempt if it parsed (a duplicate whole
            # unit): the owner of a contested record must not depend on a shard's seen codes.
            result = self._parse(unit.offset, unit.data[:end])
        tail = unit.data[end:]
        yield result
        stray = _COMMENTS.sub(b"", tail).strip()
        if stray:
            yield self._reject_unit(
                _Unit(unit.offset + end + max(0, tail.find(stray[:16])), stray, "garbage")
            )

    def _reject_unit(self, unit: _Unit) -> InvalidRecord:
        reasons = {
            "garbage": "unexpected content between products (not inside any <product>)",
            "unclosed": "product has no </product> before the next <product>",
            "truncated": "document ends inside this product (feed truncated: no </zentrade>)",
            "oversized": f"record exceeds {self.max_record_bytes} bytes; skipped to the next "
            "<product>",
        }
        code = _code_hint(unit.data) if unit.kind != "garbage" else None
        return self._invalid(code, reasons.get(unit.kind, unit.kind), unit.offset, unit.data)

    def _invalid(
        self, code: str | None, reason: str, offset: int, data: bytes, length: int | None = None
    ) -> InvalidRecord:
        self.rejects += 1
        raw = {
            "offset": offset,
            "length": length if length is not None else len(data),
            "bytes": _escape_raw(data[:RAW_BYTES], self.encoding),
            "truncated": len(data) > RAW_BYTES or (length or 0) > RAW_BYTES,
        }
        return InvalidRecord(SUPPLIER, code, _short(reason), raw=raw)

    def _decode(self, data: bytes) -> str:
        try:
            return data.decode(self.encoding)
        except UnicodeDecodeError as exc:
            if self.fallback_encoding:
                try:
                    return data.decode(self.fallback_encoding)
                except UnicodeDecodeError:
                    pass
            bad = data[exc.start : exc.end + 1].hex(" ")
            raise _RecordError(
                f"invalid {self.encoding.upper()} byte sequence at byte {exc.start} of the "
                f"record ({bad})"
            ) from None

    def _duplicate(self, code: str, offset: int, data: bytes) -> InvalidRecord:
        return self._invalid(
            code,
            f"duplicate product code {code}: already read earlier in this document (the first "
            "one is kept)",
            offset,
            data,
        )

    def _unchanged(
        self, offset: int, data: bytes, code: str, fingerprint: str
    ) -> UnchangedRecord | InvalidRecord:
        self._record_code = code
        if not self._seen.add(code):
            return self._duplicate(code, offset, data)
        self.products += 1
        self.unparsed += 1
        return UnchangedRecord(SUPPLIER, code, fingerprint)

    def _parse(
        self, offset: int, data: bytes, fingerprint: str | None = None
    ) -> SupplierProduct | InvalidRecord:
        try:
            text = self._decode(data)
            control = (
                _CONTROL.search(text)
                if not self._control_in_bytes or _has_control_bytes(data)
                else None
            )
            if control:
                raise _RecordError(
                    f"control character U+{ord(control.group()):04X} at character "
                    f"{control.start()} of the record (not allowed in XML)"
                )
            try:
                element = etree.fromstring(text.encode("utf-8"), parser=self._parser)
            except etree.XMLSyntaxError as exc:
                raise _RecordError(f"not well-formed XML: {exc.msg}") from None
            product = parse_record(
                element,
                assumed_stock=self.assumed_stock,
                shipping_fee=self.shipping_fee,
                source_fingerprint=fingerprint,
            )
        except _RecordError as exc:
            return self._invalid(_code_hint(data), str(exc), offset, data)
        if self._record_code is None:  # a product or a duplicate: its code's shard
            self._record_code = product.supplier_sku
        if not self._seen.add(product.supplier_sku):
            return self._duplicate(product.supplier_sku, offset, data)
        self.products += 1
        return product


# The start tag's attributes are walked one by one (a quoted value is skipped whole), so the
# code found is that of the attribute named exactly ``code``, as the XML parser reads it: not
# ``x-code``, not ``code=`` written inside another attribute's value.
_CODE_HINT = re.compile(
    rb"""<product(?:\s+[^\s=<>"'/]+\s*=\s*(?:"[^"<]*"|'[^'<]*'))*?"""
    rb"""\s+code\s*=\s*(?:"([^"<]*)"|'([^'<]*)')"""
)
# _VALID_CODE around blanks (what str.strip() removes in ASCII), on the bytes: the same test
# as decoding, stripping and matching, without the decoding.
_VALID_CODE_BYTES = re.compile(rb"[\s\x1c-\x1f]*([0-9A-Za-z_-]{1,64})[\s\x1c-\x1f]*")


def _code_hint(data: bytes) -> str | None:
    """The ``code`` attribute read from the raw bytes (a record that cannot be parsed, its
    fingerprint key, its shard). ``None`` unless it is a valid code written plainly (no
    character reference): then it is the code the parser reads (see :meth:`FeedReader._owned`
    for the encodings in which that holds)."""
    match = _CODE_HINT.match(data)
    if match is None:
        return None
    value = match.group(1) if match.group(1) is not None else match.group(2)
    valid = _VALID_CODE_BYTES.fullmatch(value)
    return valid.group(1).decode("ascii") if valid else None


def feed_shard(code: str, shards: int) -> int:
    """The shard of a sharded full read (``feed_shards``) that owns product ``code``: CRC-32
    of the code's bytes, the same in every process (unlike ``hash()``, salted per process)."""
    return zlib.crc32(code.encode("utf-8")) % shards if shards > 1 else 0


def iter_feed(
    chunks: Iterable[bytes],
    *,
    assumed_stock: int = DEFAULT_ASSUMED_STOCK,
    shipping_fee: int = 0,
    max_record_bytes: int = MAX_RECORD_BYTES,
    known: KnownFingerprints | None = None,
    shard: int = 0,
    shards: int = 1,
) -> Iterator[SupplierProduct | InvalidRecord | UnchangedRecord]:
    """Every record of a Zentrade product document given as byte chunks (see
    :class:`FeedReader`); a truncated document ends with an :class:`InvalidRecord` for the cut
    product and then raises :class:`TransientError`. With ``known``, records whose stored
    fingerprint matches come as :class:`UnchangedRecord`, unparsed. With ``shards`` > 1 only
    the records of shard ``shard`` (:meth:`FeedReader._owned`); a document-level fault (not a
    product document, truncated) raises in every shard."""
    reader = FeedReader(
        chunks,
        assumed_stock=assumed_stock,
        shipping_fee=shipping_fee,
        max_record_bytes=max_record_bytes,
        known=known,
        shard=shard,
        shards=shards,
    )
    yield from reader
    if reader.truncated:
        where = f" (shard {shard + 1} of {shards})" if shards > 1 else ""
        raise TransientError(
            f"gentrade feed truncated after {reader.products} products{where}: no </zentrade>"
        )


# --------------------------------------------------------------------------- one record


class _RecordError(Exception):
    """Why one record cannot be a product (becomes the InvalidRecord's reason)."""


def _record_parser() -> Any:
    # Data, not a document to trust: no entity expansion, no DTD, no network, libxml2's size
    # limits on. Not recover: a record that is not well-formed is rejected with the reason.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=False
    )


_VALID_CODE = re.compile(r"[0-9A-Za-z_-]{1,64}")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.0+)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Children that carry text (CDATA) and those that carry only attributes.
_TEXT_FIELDS = ("dome_category", "prdtname", "option", "content", "keyword")
_ATTRIBUTE_FIELDS = ("scategory", "baseinfo", "price", "listimg", "status")
_KNOWN_FIELDS = frozenset(_TEXT_FIELDS + _ATTRIBUTE_FIELDS)


def _number(value: str | None, what: str, *, required: bool = True) -> int | None:
    text = (value or "").strip()
    if text.isdigit() and text.isascii():
        return int(text)  # the common case, without the regex (same result as below)
    if not text:
        if required:
            raise _RecordError(f"{what} is missing")
        return None
    if not _NUMBER.fullmatch(text):
        raise _RecordError(f"{what} {text[:40]!r} is not a whole number")
    return int(text.split(".")[0].replace(",", ""))


def _price(value: str | None, what: str) -> int:
    amount = _number(value, what)
    assert amount is not None
    if amount < 0:
        raise _RecordError(f"{what} {amount} is below zero")
    if not MIN_PRICE <= amount <= MAX_PRICE:
        raise _RecordError(f"{what} {amount} KRW is outside {MIN_PRICE}..{MAX_PRICE:,}")
    return amount


def _text(element: Any) -> str:
    return (element.text or "").strip() if element is not None else ""


def _children(product: Any) -> dict[str, Any]:
    """The product's known child elements by tag, in one pass, checking the shape: each known
    element at most once, no element inside them, no text inside the attribute-only ones, no
    ``<product>`` anywhere inside. Unknown elements are ignored (a newer feed may add some)."""
    children: dict[str, Any] = {}
    for child in product:
        tag = child.tag
        if not isinstance(tag, str):
            continue  # comments, processing instructions
        if tag == "product":
            raise _RecordError("a <product> is nested inside this product")
        if tag not in _KNOWN_FIELDS:
            if next(child.iter("product"), None) is not None:
                raise _RecordError(f"a <product> is nested inside <{tag}> of this product")
            continue
        if tag in children:
            raise _RecordError(f"more than one <{tag}>")
        children[tag] = child
        if len(child):
            inner = next((c for c in child if isinstance(c.tag, str)), None)
            if inner is not None:
                what = "a <product> is nested" if inner.tag == "product" else "unexpected element"
                raise _RecordError(f"{what} <{inner.tag}> inside <{tag}>")
        if tag in _ATTRIBUTE_FIELDS and child.text and child.text.strip():
            raise _RecordError(f"unexpected text inside <{tag}>")
    return children


def parse_options(element: Any, buyprice: int, stock: int) -> tuple[tuple[ProductOption, ...], str]:
    """``<option opt1nm>`` rows -> options with ``price_delta`` relative to ``buyprice``;
    also returns the option name. Raises :class:`_RecordError` naming the bad row."""
    if element is None:
        return (), ""
    name = (element.get("opt1nm") or "").strip() or "옵션"
    options: list[ProductOption] = []
    labels: set[str] = set()
    for number, row in enumerate(_text(element).split(OPTION_ROW_SEPARATOR), start=1):
        row = row.strip()
        if not row:
            continue  # the separator may end the list
        fields = row.split(OPTION_FIELD_SEPARATOR)
        if len(fields) != 4:
            raise _RecordError(
                f"option row {number} has {len(fields)} fields, expected 4 "
                "(label^|^price^|^consumer price^|^image url)"
            )
        label = fields[0].strip()
        price_text, consumer_text = fields[1], fields[2]  # _number strips
        if not label:
            raise _RecordError(f"option row {number} has an empty label")
        if label in labels:
            raise _RecordError(f"option row {number}: duplicate label {label[:60]!r}")
        labels.add(label)
        # The common case (plain digits in range) without building the error labels.
        price_digits = price_text.strip()
        if price_digits.isdigit() and price_digits.isascii():
            price = int(price_digits)
            if not MIN_PRICE <= price <= MAX_PRICE:
                price = _price(price_text, f"option row {number} price")  # raises
        else:
            price = _price(price_text, f"option row {number} price")
        consumer_digits = consumer_text.strip()
        if consumer_digits and not (consumer_digits.isdigit() and consumer_digits.isascii()):
            _number(consumer_text, f"option row {number} consumer price", required=False)
        options.append(
            ProductOption(
                name=name,
                value=label,
                price_delta=price - buyprice,
                stock=stock,
                supplier_option_code=label,
            )
        )
    return tuple(options), name


def parse_record(
    product: Any,
    *,
    assumed_stock: int = DEFAULT_ASSUMED_STOCK,
    shipping_fee: int = 0,
    source_fingerprint: str | None = None,
) -> SupplierProduct:
    """One parsed ``<product>`` element -> :class:`SupplierProduct`, or :class:`_RecordError`
    with the precise reason."""
    if product.tag != "product":
        raise _RecordError(f"record is <{product.tag}>, not <product>")
    code = (product.get("code") or "").strip()
    if not code:
        raise _RecordError("product has no code attribute")
    if not _VALID_CODE.fullmatch(code):
        raise _RecordError(f"product code {code[:40]!r} is not a Zentrade product number")
    fields = _children(product)
    name = _text(fields.get("prdtname"))
    if not name:
        raise _RecordError("prdtname is missing or empty")
    price = fields.get("price")
    if price is None:
        raise _RecordError("<price> is missing")
    buyprice = _price(price.get("buyprice"), "price/@buyprice")
    consumer = _number(price.get("consumerprice"), "price/@consumerprice", required=False)
    taxmode = (price.get("taxmode") or "").strip()
    if taxmode not in ("", "Y", "N"):
        raise _RecordError(f"price/@taxmode {taxmode[:10]!r} is not Y or N")

    status_node = fields.get("status")
    if status_node is None:
        raise _RecordError("<status> is missing (no runout flag)")
    runout = (status_node.get("runout") or "").strip()
    if runout not in ("0", "1"):
        raise _RecordError(f"status/@runout {runout[:10]!r} is not 0 or 1")
    opendate = (status_node.get("opendate") or "").strip()
    if opendate:
        try:
            if not _DATE.fullmatch(opendate):
                raise ValueError
            date.fromisoformat(opendate)
        except ValueError:
            raise _RecordError(f"status/@opendate {opendate[:20]!r} is not yyyy-mm-dd") from None
    soldout = runout == "1"
    stock = 0 if soldout else assumed_stock

    options, option_name = parse_options(fields.get("option"), buyprice, stock)
    category_node = fields.get("dome_category")
    category = ""
    if category_node is not None:
        category = (category_node.get("dome_catecode") or "").strip()
    images_node = fields.get("listimg")
    images: tuple[str, ...] = ()
    if images_node is not None:
        images = tuple(
            url
            for key in ("url1", "url2", "url3", "url4", "url5")
            if (url := (images_node.get(key) or "").strip())
        )
    base = fields.get("baseinfo")
    get = base.get if base is not None else {}.get
    raw: dict[str, Any] = {
        "code": code,
        "category_name": _text(category_node),
        "madein": get("madein", ""),
        "productcom": get("productcom", ""),
        "brand": get("brand", ""),
        "model": get("model", ""),
        "consumerprice": consumer,
        "taxmode": taxmode,
        "option_name": option_name,
        "keyword": _text(fields.get("keyword")),
        "content": _text(fields.get("content")),
        "runout": runout,
        "opendate": opendate,
    }
    return SupplierProduct(
        supplier=SUPPLIER,
        supplier_sku=code,
        name=name,
        cost_price=buyprice,
        shipping_fee=shipping_fee,
        stock=stock,
        status="soldout" if soldout else "active",
        category=category or None,
        images=images,
        options=options,
        updated_at=None,  # the document has no change time (opendate is when it went on sale)
        stock_assumed=not soldout,
        raw=raw,
        source_fingerprint=source_fingerprint,
    )


# --------------------------------------------------------------------------- order lookup


@dataclass(frozen=True)
class ZentradeOrder:
    """One ``<ord_info>`` of ``order_api.php`` (receiver fields are not kept: personal data)."""

    ordno: str
    pordno: str
    ord_date: str
    items: tuple[str, ...]
    delicom: str
    delinum: str


def parse_order_document(content: bytes) -> list[ZentradeOrder]:
    """``<zentrade version="ZENTRADE ORDER XML 1.0">`` -> its orders."""
    try:
        root = etree.fromstring(content, parser=_record_parser())
    except etree.XMLSyntaxError as exc:
        raise TransientError(f"gentrade order lookup is not well-formed XML: {exc.msg}") from None
    if root.tag != "zentrade":
        raise TransientError(f"gentrade order lookup answered <{root.tag}>, not <zentrade>")
    orders = []
    for node in root.iter("ord_info"):
        deli = node.find("deli_info")
        items = tuple(
            _text(child)
            for child in node
            if isinstance(child.tag, str) and re.fullmatch(r"ord_item\d+", child.tag)
        )
        orders.append(
            ZentradeOrder(
                ordno=(node.get("ordno") or "").strip(),
                pordno=(node.get("pordno") or "").strip(),
                ord_date=_text(node.find("ord_date")),
                items=items,
                delicom=(deli.get("delicom") or "").strip() if deli is not None else "",
                delinum=(deli.get("delinum") or "").strip() if deli is not None else "",
            )
        )
    return orders


# --------------------------------------------------------------------------- connector


def _int_option(
    account: AccountSettings, key: str, default: int, maximum: int, minimum: int = 0
) -> int:
    value = account.option(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if not minimum <= number <= maximum:
        raise ConfigurationError(
            f"account {account.name!r} (gentrade): option {key} must be a whole number within "
            f"{minimum}..{maximum}; set DROPSHIP_PLATFORMS__ACCOUNTS__{account.name.upper()}__"
            f"OPTIONS__{key.upper()}"
        )
    return number


class GentradeConnector(SupplierConnectorBase):
    """:class:`~dropship.platforms.interfaces.SupplierConnector` for Zentrade."""

    supplier = SUPPLIER

    def __init__(
        self,
        *,
        account: AccountSettings,
        http: PlatformHttp,
        cache: ResponseCache | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        super().__init__(account=account, http=http, cache=cache)
        self.chunk_bytes = chunk_bytes
        self.assumed_stock = _int_option(account, "assumed_stock", DEFAULT_ASSUMED_STOCK, MAX_STOCK)
        self.shipping_fee = _int_option(account, "shipping_fee", 0, MAX_PRICE)
        self.feed_shards = _int_option(
            account, "feed_shards", DEFAULT_FEED_SHARDS, MAX_FEED_SHARDS, minimum=1
        )

    def _auth(self) -> dict[str, str]:
        return {"id": self.account.secret("id"), "m_skey": self.account.secret("key")}

    # ------------------------------------------------------------------ catalog

    def plan_slices(self, since: datetime | None = None) -> list[CollectSlice]:
        """A full run reads the whole document once per shard (account option
        ``feed_shards``, default 2): slice ``feed:i/n`` streams it all but parses and stages
        only the products whose code is in shard ``i`` (:func:`feed_shard`), so the parse, the
        cost of a first run, is spread over the workers; ``feed_shards=1`` is one slice
        ``feed``. An incremental run reads the products that went on sale in the window
        (``opendate_s``..``opendate_e``, whole KST days, both required by the API) and the
        sold-out list (``runout=1``): the document has no change time, so price changes of
        older products are only seen by a full run."""
        if since is None:
            shards = self.feed_shards
            if shards == 1:
                return [CollectSlice("feed")]
            return [
                CollectSlice(f"feed:{i}/{shards}", {"shard": i, "shards": shards})
                for i in range(shards)
            ]
        start = since.astimezone(KST).date()
        end = max(start, datetime.now(KST).date())
        return [
            CollectSlice(
                f"opendate:{start}:{end}",
                {"opendate_s": start.isoformat(), "opendate_e": end.isoformat()},
            ),
            CollectSlice("runout", {"runout": "1"}),
        ]

    def iter_slice(self, piece: CollectSlice) -> Iterator[SupplierProduct | InvalidRecord]:
        # Without ``known`` the reader yields no UnchangedRecord.
        return cast(
            Iterator[SupplierProduct | InvalidRecord],
            self._read(self._slice_params(piece), shard=self._shard(piece)),
        )

    def iter_slice_fingerprinted(
        self, piece: CollectSlice, known: KnownFingerprints
    ) -> Iterator[SupplierProduct | InvalidRecord | UnchangedRecord]:
        """``iter_slice``, but a record whose bytes a stored product was parsed from comes as
        an :class:`UnchangedRecord` (see :meth:`FeedReader._resolve`): the document is still
        read whole, only the parse is skipped."""
        return self._read(self._slice_params(piece), known, self._shard(piece))

    @staticmethod
    def _shard(piece: CollectSlice) -> tuple[int, int]:
        """(shard, shards) of a slice; (0, 1) for a whole read. A slice keeps the shard count
        it was planned with, whatever the account option says when it runs."""
        try:
            shard = int(piece.params.get("shard", 0))
            shards = int(piece.params.get("shards", 1))
        except (TypeError, ValueError):
            shard, shards = -1, 0
        if not 0 <= shard < shards <= MAX_FEED_SHARDS:
            raise PermanentError(
                f"gentrade slice {piece.key!r}: shard {piece.params.get('shard')!r} of "
                f"{piece.params.get('shards')!r} is not a valid feed shard"
            )
        return shard, shards

    @staticmethod
    def _slice_params(piece: CollectSlice) -> dict[str, str]:
        params: dict[str, str] = {}
        for key in ("goodsno", "runout", "opendate_s", "opendate_e"):
            if piece.params.get(key) not in (None, ""):
                params[key] = str(piece.params[key])
        return params

    def iter_products(
        self, since: datetime | None = None
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        # One process reading everything gains nothing from shards: one read, in order.
        pieces = [CollectSlice("feed")] if since is None else self.plan_slices(since)
        for piece in pieces:
            yield from self.iter_slice(piece)

    def _read(
        self,
        params: dict[str, str],
        known: KnownFingerprints | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[SupplierProduct | InvalidRecord | UnchangedRecord]:
        response = self.http.get(FEED_PATH, params={**self._auth(), **params}, stream=True)
        try:
            yield from iter_feed(
                self._chunks(response),
                assumed_stock=self.assumed_stock,
                shipping_fee=self.shipping_fee,
                known=known,
                shard=shard[0],
                shards=shard[1],
            )
        finally:
            response.close()  # also when the caller stops early: give the connection back

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_content(chunk_size=self.chunk_bytes)
        except STREAM_CUT_ERRORS as exc:
            raise TransientError(f"gentrade feed interrupted: {type(exc).__name__}") from None

    def get_product(self, supplier_sku: str) -> SupplierProduct | None:
        """``product_api.php?goodsno=`` answers a document with that one product (or none)."""

        def load() -> dict[str, Any] | None:
            for record in self.iter_slice(CollectSlice("goodsno", {"goodsno": supplier_sku})):
                if record.supplier_sku != supplier_sku:
                    continue
                if isinstance(record, InvalidRecord):
                    raise self.malformed_error(record)
                return _to_cached(record)
            return None

        # The cache stores JSON: the product goes in as a plain dict and comes back rebuilt.
        cached = self.cached_detail(supplier_sku, load)
        return _from_cached(cached) if cached is not None else None

    # ------------------------------------------------------------------ orders

    def lookup_orders(
        self, *, pordno: str | None = None, ordno: str | None = None
    ) -> list[ZentradeOrder]:
        """``order_api.php`` by our order key (``pordno``) or Zentrade's 13-digit ``ordno``."""
        if bool(pordno) == bool(ordno):
            raise PermanentError("gentrade order lookup needs exactly one of pordno, ordno")
        query = {"pordno": pordno} if pordno else {"ordno": ordno}
        response = self.http.get(ORDER_PATH, params={**self._auth(), **query}, stream=True)
        try:
            content = b"".join(self._chunks(response))
        finally:
            response.close()
        return parse_order_document(content)

    def place_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        raise OrderingNotSupportedError(
            f"gentrade (Zentrade) has no order-creation API: purchase order {request.order_key} "
            "must go out on a purchase-order sheet uploaded at Zentrade with pordno = the order "
            "key; get_shipments then follows it by pordno"
        )

    def get_shipments(self, order_keys: Sequence[str]) -> list[ShipmentInfo]:
        shipments = []
        for key in dict.fromkeys(order_keys):
            for order in self.lookup_orders(pordno=key):
                if order.pordno == key and order.delinum:
                    shipments.append(
                        ShipmentInfo(
                            order_key=key,
                            carrier=order.delicom,
                            tracking_number=order.delinum,
                            supplier_order_id=order.ordno or None,
                        )
                    )
        return shipments

    def cancel_order(self, order_key: str, reason: str = "") -> bool:
        raise OrderingNotSupportedError(
            f"gentrade (Zentrade) has no cancel API: cancel purchase order {order_key} with "
            "Zentrade directly (order_api.php only looks orders up)"
        )


def _to_cached(product: SupplierProduct) -> dict[str, Any]:
    return {
        "sku": product.supplier_sku,
        "name": product.name,
        "cost": product.cost_price,
        "fee": product.shipping_fee,
        "stock": product.stock,
        "status": product.status,
        "category": product.category,
        "images": list(product.images),
        "options": [
            [o.name, o.value, o.price_delta, o.stock, o.supplier_option_code]
            for o in product.options
        ],
        "stock_assumed": product.stock_assumed,
        "raw": product.raw,
    }


def _from_cached(data: dict[str, Any]) -> SupplierProduct:
    return SupplierProduct(
        supplier=SUPPLIER,
        supplier_sku=data["sku"],
        name=data["name"],
        cost_price=data["cost"],
        shipping_fee=data["fee"],
        stock=data["stock"],
        status=data["status"],
        category=data["category"],
        images=tuple(data["images"]),
        options=tuple(ProductOption(*o) for o in data["options"]),
        stock_assumed=data["stock_assumed"],
        raw=data["raw"],
    )
