"""Images per market against the sandbox over HTTP: Naver listings carry only Naver-hosted
URLs (uploaded in batches of at most 10, once per account), Coupang gets our hosted URLs and
downloads every one, listings carry only accepted images, and a product whose images all fail
waits with the reason. The market sandboxes are checked to refuse what the real ones refuse."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from PIL import Image
from sqlalchemy import Engine, text

from dropship.errors import PermanentError
from dropship.images import services as images
from dropship.listings import services
from dropship.platforms.interfaces import MarketListingRequest
from dropship.sandbox.coupang import CoupangWorld
from dropship.sandbox.credentials import sandbox_account_config
from dropship.sandbox.naver import NaverWorld
from dropship.settings import get_settings
from tests.images.conftest import HostedStore, fixture_url
from tests.listings.conftest import add_mapping, add_product, add_rule
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    connector_settings,
    make_connector,
    sandbox,
    sandbox_server,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def accounts(sandbox: SandboxFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    monkeypatch.setenv(
        "DROPSHIP_PLATFORMS__ACCOUNTS", json.dumps(sandbox_account_config(sandbox.base_url))
    )
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def catalog(
    committed_db: Engine,
    sandbox: SandboxFixture,  # noqa: F811
    image_store: HostedStore,
    accounts: None,
) -> dict[str, Any]:
    base = sandbox.base_url
    photos = [fixture_url(base, "jpeg", f"p{n}", w=900 + 10 * n, h=700) for n in range(12)]
    broken = fixture_url(base, "truncated", "broken.jpg")
    bomb = fixture_url(base, "bomb", "bomb.png")
    with committed_db.begin() as conn:
        for market, category in (("coupang", "56137"), ("naver", "50000803")):
            add_rule(conn, market=market, margin="0.2", fee="0.1")
            add_mapping(conn, market=market, market_category=category)
        many = add_product(conn, images=[photos[0], broken, *photos[1:12]])  # 12 usable + 1 bad
        shared = add_product(conn, images=[photos[0], photos[1]])  # images of `many` again
        hopeless = add_product(conn, images=[broken, bomb])
    counts = images.process_products([many, shared, hopeless])
    assert counts["ok"] == 12 and counts["failed"] == 2
    return {"many": many, "shared": shared, "hopeless": hopeless, "photos": photos}


def listed(engine: Engine, account: str) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT l.* FROM listings l JOIN accounts a ON a.id = l.account_id "
                "WHERE a.name = :a"
            ),
            {"a": account},
        ).all()
    return {r.product_id: dict(r._mapping) for r in rows}


def register(account: str, factory: Callable[[str], Any]) -> dict[str, Any]:
    planned = services.plan_registrations(account)
    planned["result"] = services.register_listings(account, planned["publish"], factory)
    return planned


def naver_product_images(box: SandboxFixture) -> dict[str, list[str]]:
    """Each Naver sandbox product's image URLs, by seller management code."""
    world = NaverWorld(box.state)
    out = {}
    with box.state.lock:
        for product in world.store.products.values():
            origin = product.origin_product
            code = origin["detailAttribute"]["sellerCodeInfo"]["sellerManagementCode"]
            imgs = origin["images"]
            out[code] = [imgs["representativeImage"]["url"]] + [
                o["url"] for o in imgs.get("optionalImages", [])
            ]
    return out


def test_naver_listings_use_only_naver_hosted_images_uploaded_once_per_account(
    committed_db: Engine,
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, Any],
    make_connector: Callable[[str], Any],  # noqa: F811
) -> None:
    planned = register("naver_main", make_connector)
    assert planned["result"] == {"active": 2, "refused": 0, "skipped": 0}
    rows = listed(committed_db, "naver_main")
    assert set(rows) == {catalog["many"], catalog["shared"]}  # the hopeless one waits
    calls = sandbox.counts()["calls"]["naver"]
    # 10 distinct images used (the market's maximum per listing), uploaded in one call of 10;
    # the shared product's two images were already uploaded for this account.
    assert sandbox.counts()["naver_image_uploads"] == {"_total": 10}
    assert calls["product-images.upload"] == 1
    hosted = f"{sandbox.base_url}/naver/phinf/"
    by_sku = naver_product_images(sandbox)
    assert len(by_sku[rows[catalog["many"]]["external_sku"]]) == 10  # broken one left out
    assert len(by_sku[rows[catalog["shared"]]["external_sku"]]) == 2
    assert all(u.startswith(hosted) for urls in by_sku.values() for u in urls)
    for url in by_sku[rows[catalog["many"]]["external_sku"]]:
        width, height = Image.open(io.BytesIO(requests.get(url, timeout=5).content)).size
        assert width == height >= 600  # square, at least Naver's minimum

    # Another account of the same market gets its own uploads; a re-run uploads nothing.
    register("naver_second", make_connector)
    assert sandbox.counts()["naver_image_uploads"] == {"_total": 20}
    with committed_db.begin() as conn:
        conn.execute(text("DELETE FROM listings"))
    register("naver_main", make_connector)
    assert sandbox.counts()["naver_image_uploads"] == {"_total": 20}


def test_coupang_gets_our_hosted_urls_and_downloads_every_one(
    committed_db: Engine,
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, Any],
    make_connector: Callable[[str], Any],  # noqa: F811
    image_store: HostedStore,
) -> None:
    planned = register("coupang_main", make_connector)
    assert planned["result"] == {"active": 2, "refused": 0, "skipped": 0}
    fetched = sandbox.counts()["coupang_image_fetches"]
    # Every vendorPath of both listings downloaded: 10 distinct (the shared product's 2 are
    # among them, so those were fetched twice).
    assert len(fetched) == 10 and sum(fetched.values()) == 12
    assert all(url.startswith(image_store.base_url + "/") for url in fetched)
    world = CoupangWorld(sandbox.state)
    with sandbox.state.lock:
        assert len(world.store.products) == 2
    # The product whose images all failed waits, with the reason, listed for the operator.
    waiting = {r["product_id"]: r["reason"] for r in images.waiting_products()}
    assert waiting[catalog["hopeless"]].startswith("no usable image of 2: broken.jpg: corrupt")
    assert "decompression bomb" in waiting[catalog["hopeless"]]
    assert catalog["hopeless"] not in listed(committed_db, "coupang_main")
    assert images.image_counts()["products_waiting"] == 1


def request(sku: str, urls: tuple[str, ...]) -> MarketListingRequest:
    return MarketListingRequest(
        external_sku=sku,
        name="테스트 상품",
        sale_price=12_000,
        stock=3,
        category_id="56137",
        images=urls,
    )


@pytest.mark.parametrize(
    ("kind", "query", "message"),
    [
        ("truncated", {}, "이미지를 읽을 수 없습니다"),
        ("missing", {}, "이미지를 다운로드할 수 없습니다"),
        ("jpeg", {"w": 900, "h": 600}, "대표이미지는 정사각형이어야 합니다"),
        ("tiny", {}, "이미지 크기가 규격을 벗어났습니다"),
    ],
)
def test_coupang_sandbox_refuses_a_vendor_path_it_cannot_fetch_or_decode(
    sandbox: SandboxFixture,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    kind: str,
    query: dict[str, int],
    message: str,
) -> None:
    url = fixture_url(sandbox.base_url, kind, f"{kind}.jpg", **query)
    with pytest.raises(PermanentError, match=message):
        make_connector("coupang_main").create_listing(request(f"bad-{kind}", (url,)))
    assert sandbox.counts()["listings"] == {}


def test_naver_sandbox_refuses_foreign_urls_and_checks_uploads(
    sandbox: SandboxFixture,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
) -> None:
    naver = make_connector("naver_main")
    foreign = fixture_url(sandbox.base_url, "jpeg", "foreign.jpg", w=800, h=800)
    with pytest.raises(PermanentError, match="representativeImage"):
        naver.create_listing(request("foreign", (foreign,)))
    good = io.BytesIO()
    Image.new("RGB", (800, 800), "white").save(good, "JPEG")
    with pytest.raises(PermanentError, match="at most 10"):
        naver.upload_images([(f"{n}.jpg", good.getvalue()) for n in range(11)])
    with pytest.raises(PermanentError, match="HTTP 400"):
        naver.upload_images([("x.jpg", b"<html>not an image</html>")])
    small = io.BytesIO()
    Image.new("RGB", (300, 300), "white").save(small, "JPEG")
    with pytest.raises(PermanentError, match="HTTP 400"):
        naver.upload_images([("s.jpg", small.getvalue())])
    # The sandbox itself refuses 11 at once (not only our connector).
    token = naver._access_token()
    files = [("imageFiles", (f"{n}.jpg", good.getvalue(), "image/jpeg")) for n in range(11)]
    answer = requests.post(
        f"{sandbox.base_url}/naver/external/v1/product-images/upload",
        files=files,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 400 and "최대 10개" in answer.text
    (url,) = naver.upload_images([("ok.jpg", good.getvalue())])
    result = naver.create_listing(request("hosted", (url,)))
    assert result.market_product_id and sandbox.counts()["listings"] == {"hosted": 1}
