"""``dropship rules ...`` and ``dropship listings unmapped`` through the real CLI (typer's
CliRunner, in process, committed to the real database): edits change the next evaluation,
CSV imports are all or nothing with the bad line and column named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner, Result

from dropship.cli import cli
from dropship.settings import get_settings
from tests.listings.conftest import add_product

runner = CliRunner()


def dropship(*args: str) -> Result:
    return runner.invoke(cli, list(args), env={"COLUMNS": "250"})


@pytest.fixture
def market_accounts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    accounts = {
        "coupang_main": {"platform": "coupang", "base_url": "http://127.0.0.1:9"},
        "coupang_adult": {
            "platform": "coupang",
            "base_url": "http://127.0.0.1:9",
            "allow_adult": True,
        },
    }
    monkeypatch.setenv("DROPSHIP_PLATFORMS__ACCOUNTS", json.dumps(accounts))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def check(product_id: int, account: str = "coupang_main") -> str:
    result = dropship("rules", "check", account, str(product_id))
    assert result.exit_code == 0, result.output
    return result.output


def test_rules_edited_through_the_cli_change_the_next_evaluation(
    rules_db: Engine, market_accounts: None
) -> None:
    with rules_db.begin() as conn:
        product = add_product(conn, supplier_sku="OC-9", name="머그컵 세트", price=9000)
        adult = add_product(conn, adult_only=True)
    assert "no category mapping" in check(product)

    assert (
        dropship("rules", "category", "add", "ownerclan", "KITCHEN", "coupang", "56137").exit_code
        == 0
    )
    assert "(no_pricing_rule)" in check(product)

    added = dropship("rules", "pricing", "add", "coupang", "--margin", "10%", "--fee", "0.1")
    assert added.exit_code == 0, added.output
    assert "listable at 11000 KRW" in check(product)

    # A category rule for the market category wins over the default.
    dropship(
        "rules",
        "pricing",
        "add",
        "coupang",
        "--category",
        "56137",
        "--margin",
        "0.5",
        "--fee",
        "0.1",
    )
    assert "listable at 15000 KRW" in check(product)
    assert dropship("rules", "pricing", "remove", "coupang", "--category", "56137").exit_code == 0
    assert "listable at 11000 KRW" in check(product)

    dropship(
        "rules",
        "pricing",
        "add",
        "coupang",
        "--margin",
        "10%",
        "--fee",
        "0.1",
        "--min-margin",
        "901",
    )
    assert "(below_min_margin)" in check(product)
    dropship(
        "rules",
        "pricing",
        "add",
        "coupang",
        "--margin",
        "10%",
        "--fee",
        "0.1",
        "--min-margin",
        "900",
    )
    assert "listable" in check(product)

    assert dropship("rules", "words", "add", "머그", "--match", "word").exit_code == 0
    assert "listable" in check(product)  # 머그컵 is one word
    dropship("rules", "words", "add", "머그")  # same word and kind: now a substring match
    assert "(banned_word)" in check(product)
    assert "removed 1" in dropship("rules", "words", "remove", "머그").output
    assert "listable" in check(product)

    assert (
        dropship("rules", "banned", "add", "ownerclan", "OC-9", "--reason", "returns").exit_code
        == 0
    )
    assert "(banned_product): banned product: returns" in check(product)
    listed = dropship("rules", "banned", "list")
    assert "OC-9" in listed.output and "returns" in listed.output
    dropship("rules", "banned", "remove", "ownerclan", "OC-9")
    assert "listable" in check(product)

    assert "(adult_not_allowed)" in check(adult)
    assert "listable" in check(adult, "coupang_adult")


def test_cli_refuses_a_fee_near_one_by_name(rules_db: Engine) -> None:
    result = dropship("rules", "pricing", "add", "coupang", "--margin", "0.1", "--fee", "0.95")
    assert result.exit_code == 1
    assert "fee_rate 0.95 is outside 0..0.5" in result.output
    with rules_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pricing_rules")).scalar_one() == 0


def write(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_csv_imports_all_or_nothing(rules_db: Engine, tmp_path: Path) -> None:
    good = write(
        tmp_path,
        "pricing.csv",
        "market,category,margin_rate,fee_rate,min_margin_krw,rounding_krw\n"
        "coupang,,0.15,0.108,1000,10\nnaver,,15%,5.5%,1000,\ncoupang,56137,0.2,0.108,,\n",
    )
    result = dropship("rules", "pricing", "import", good)
    assert result.exit_code == 0, result.output
    assert "imported 3" in result.output and count(rules_db, "pricing_rules") == 3
    assert dropship("rules", "pricing", "import", good).exit_code == 0  # idempotent
    assert count(rules_db, "pricing_rules") == 3

    bad = write(
        tmp_path,
        "mapping.csv",
        "supplier,supplier_category,market,market_category\n"
        "ownerclan,KITCHEN,coupang,56137\n"
        "ownerclan,GARDEN,gmarket,1\n",
    )
    result = dropship("rules", "category", "import", bad)
    assert result.exit_code == 1
    assert "line 3, column market: 'gmarket' is not one of coupang, naver" in result.output
    assert count(rules_db, "category_map") == 0  # line 2 was valid, and not imported either

    words = write(
        tmp_path,
        "words.csv",
        "word,kind,match,market,reason\n총,ban,word,,weapons\n총알배송,exclude,substring,,\n"
        "짝퉁,ban,substring,coupang,\n짝퉁,ban,fuzzy,,\n",
    )
    result = dropship("rules", "words", "import", words)
    assert result.exit_code == 1 and "line 5, column match: 'fuzzy'" in result.output
    assert count(rules_db, "banned_words") == 0

    duplicate = write(tmp_path, "banned.csv", "supplier,supplier_sku\ngentrade,1\ngentrade,1\n")
    result = dropship("rules", "banned", "import", duplicate)
    assert result.exit_code == 1 and "line 3: same supplier/supplier_sku as line 2" in result.output

    headerless = write(tmp_path, "h.csv", "ownerclan,KITCHEN,coupang,56137\n")
    result = dropship("rules", "category", "import", headerless)
    assert result.exit_code == 1 and "line 1: missing column(s)" in result.output

    result = dropship("rules", "pricing", "import", str(tmp_path / "nope.csv"))
    assert result.exit_code == 1 and "cannot read" in result.output


def test_listings_unmapped_lists_the_biggest_blockers(rules_db: Engine) -> None:
    with rules_db.begin() as conn:
        for _ in range(4):
            add_product(conn, supplier="domeggook", category="07_03")
        add_product(conn, category="GARDEN")
    dropship("rules", "category", "add", "domeggook", "07_03", "naver", "50000803")
    result = dropship("listings", "unmapped", "--market", "coupang")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "coupang" in line]
    assert "domeggook" in lines[0] and "07_03" in lines[0] and lines[0].rstrip(" │|").endswith("4")
    assert "GARDEN" in lines[1]
    naver = dropship("listings", "unmapped", "--market", "naver").output
    assert "07_03" not in naver and "GARDEN" in naver
    assert dropship("listings", "unmapped", "--market", "gmarket").exit_code == 1


def test_listings_blocked_shows_recorded_reasons(rules_db: Engine, market_accounts: None) -> None:
    with rules_db.begin() as conn:
        unmapped = [add_product(conn, category="GARDEN") for _ in range(3)]
        sold_out = add_product(conn, status="soldout", supplier_sku="SOLD-1")
    assert dropship("listings", "blocked").output.strip() == "no blocked products recorded"
    result = dropship("rules", "check", "coupang_main", *map(str, [*unmapped, sold_out]))
    assert result.exit_code == 0, result.output
    shown = dropship("listings", "blocked", "--account", "coupang_main")
    assert shown.exit_code == 0, shown.output
    rows = shown.output.splitlines()
    first = next(line for line in rows if "no_category_mapping" in line)
    assert "coupang_main" in first and first.rstrip(" │|").endswith("3")
    assert any("not_active" in line and line.rstrip(" │|").endswith("1") for line in rows)
    assert "SOLD-1" in shown.output and "product is soldout, not active" in shown.output
    only = dropship("listings", "blocked", "--code", "not_active").output
    assert "no_category_mapping" not in only and "SOLD-1" in only
