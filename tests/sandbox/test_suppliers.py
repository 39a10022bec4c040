"""The supplier sandbox's indexes (modification time, order notes) against the rules they stand
in for."""

from __future__ import annotations

import random
from datetime import timedelta

from dropship.sandbox.core import SandboxConfig, SandboxState
from dropship.sandbox.suppliers import SupplierWorld


def _brute_force(world: SupplierWorld, start: int, low: int | None, high: int | None) -> list[int]:
    return [
        item.index
        for item in world.items("ownerclan", start)
        if (low is None or int(item.updated_at.timestamp() * 1000) >= low)
        and (high is None or int(item.updated_at.timestamp() * 1000) <= high)
    ]


def test_updated_window_matches_filtering_every_product_across_price_change_hours() -> None:
    state = SandboxState(SandboxConfig(seed=3, catalog_size=600, price_drift=0.3))
    state.image_base = "http://127.0.0.1:1/images"  # as a running server sets it
    state.freeze_clock()
    world = SupplierWorld(state)
    stamps = sorted(int(i.updated_at.timestamp() * 1000) for i in world.items("ownerclan"))
    windows = [
        (None, None),
        (stamps[100], stamps[400]),
        (None, stamps[250]),
        (stamps[500], None),
        (stamps[-1] + 1, None),
    ]
    # Several world instants a few days apart: products' updatedAt move at their price-change
    # hours, so an index kept from an earlier hour would answer wrongly.
    for _ in range(4):
        for low, high in windows:
            for start in (0, 137):
                got = list(world.items_updated_within("ownerclan", start, low, high))
                assert [i.index for i in got] == _brute_force(world, start, low, high)
                # The very products the unfiltered path gives (images, prices, stock...).
                assert got == [world.item("ownerclan", i.index) for i in got]
        state.advance_clock(timedelta(days=3, hours=5).total_seconds())
    moved = [int(i.updated_at.timestamp() * 1000) for i in world.items("ownerclan")]
    assert sorted(moved) != stamps  # the clock advance did move some products


def test_a_sell_out_moves_updated_at_so_an_incremental_window_sees_it() -> None:
    state = SandboxState(SandboxConfig(seed=3, catalog_size=300, soldout_rate=0.0))
    state.image_base = "http://127.0.0.1:1/images"
    state.freeze_clock()
    world = SupplierWorld(state)
    latest = max(int(i.updated_at.timestamp() * 1000) for i in world.items("ownerclan"))
    state.advance_clock(3600)
    sold_at = int(world.now().timestamp() * 1000)
    with state.lock:  # what POST /_sandbox/suppliers {"sold_out": ...} records
        world.store.sold_out["ownerclan"] = {17: world.now(), 230: world.now()}
    assert sold_at > latest  # nothing else changed since: the window holds only the sell-outs
    got = list(world.items_updated_within("ownerclan", 0, sold_at - 1000, None))
    assert [i.index for i in got] == [17, 230]
    assert all(i.soldout and i.stock == 0 for i in got)
    assert [i.index for i in got] == _brute_force(world, 0, sold_at - 1000, None)


def test_note_search_finds_what_a_contains_filter_over_every_order_finds() -> None:
    # allOrders(note:) reads "note contains"; the joined-notes search must return exactly the
    # orders (and positions) a plain scan does, also as orders arrive between searches and for
    # fragments that span the separator between two notes.
    state = SandboxState(SandboxConfig(seed=3))
    world = SupplierWorld(state)
    rng = random.Random(5)
    notes = ["DS1-1", "DS1-12", "DS1-123", "xDS1-1y", "", "DS2-1", "DS1-1DS1-1"]
    fragments = ["DS1-1", "DS1-12", "1-1", "DS", "", "DS1-123", "zzz", "1\x00D", "-1DS1"]
    for round_ in range(4):
        for _ in range(40):
            world.create_order("ownerclan", rng.choice(notes), [], {}, "OC{serial}")
        everything = world.orders("ownerclan")
        for fragment in fragments:
            expected = [(p, o.key) for p, o in enumerate(everything) if fragment in (o.note or "")]
            if "\x00" in fragment:
                expected = []  # no stored note holds a NUL
            found = [(p, o.key) for p, o in world.orders_noting("ownerclan", fragment)]
            assert found == expected, (round_, fragment)
