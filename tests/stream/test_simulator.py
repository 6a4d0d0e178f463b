"""Tests of the transaction simulator (stream.simulator)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import pytest

from stream.simulator import (
    PURCHASE_FIELDS,
    LABEL_FIELDS,
    SimulationConfig,
    interleave,
    preset,
    read_events,
    simulate,
    write_events,
)

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
LONG_NUMBER = re.compile(r"\b\d{13,19}\b")


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def small_handbook(**kw) -> SimulationConfig:
    return preset("handbook", **{"n_customers": 300, "n_terminals": 600, "n_days": 40, **kw})


def small_demo(**kw) -> SimulationConfig:
    return preset("demo", **{"n_days": 12, **kw})


@pytest.fixture(scope="module")
def hb():
    return simulate(small_handbook(), seed=3)


@pytest.fixture(scope="module")
def demo():
    return simulate(small_demo(), seed=5)


def fraud_scenarios(sim) -> dict[str, int]:
    return {lb["transaction_id"]: lb["scenario"] for lb in sim.labels}


def test_presets_and_errors():
    hb_cfg = preset("handbook")
    sizes = (hb_cfg.n_customers, hb_cfg.n_terminals, hb_cfg.n_days, hb_cfg.start_date)
    assert sizes == (5000, 10000, 183, "2018-04-01")
    assert hb_cfg.multi_card_share == 0 and hb_cfg.label_delay_mode == "fixed" and hb_cfg.legit_label_share == 1.0
    assert hb_cfg.scenario_ids == (1, 2, 3)
    assert set(preset("demo").scenario_ids) >= {1, 2, 3, 4, 5, 6, 7, 8}
    drift = preset("drift", drift_day=50)
    assert drift.drift and drift.drift_day == 50 and drift.n_customers == 5000
    with pytest.raises(ValueError, match="handbook.*demo.*drift"):
        preset("nope")
    with pytest.raises(TypeError):
        preset("demo", not_a_field=1)
    with pytest.raises(ValueError):
        preset("demo", label_delay_mode="sometimes")


def test_determinism(tmp_path):
    cfg = small_demo(n_days=5)
    a, b = simulate(cfg, seed=11), simulate(cfg, seed=11)
    assert a.purchases == b.purchases and a.labels == b.labels
    for name, sim in (("a", a), ("b", b)):
        write_events(sim.purchases, tmp_path / f"{name}.jsonl")
        write_events(sim.labels, tmp_path / f"{name}_labels.parquet")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a_labels.parquet").read_bytes() == (tmp_path / "b_labels.parquet").read_bytes()
    assert simulate(cfg, seed=12).purchases != a.purchases


@pytest.mark.parametrize("name", ["hb", "demo"])
def test_schema(name, request):
    sim = request.getfixturevalue(name)
    assert sim.purchases and sim.labels
    ids = set()
    for p in sim.purchases:
        assert tuple(p) == PURCHASE_FIELDS
        assert re.fullmatch(r"tx-\d{9}", p["transaction_id"])
        ids.add(p["transaction_id"])
        for key in ("event_time", "user_registered_at", "seller_registered_at"):
            assert ISO.match(p[key]), p[key]
        assert p["user_registered_at"] < p["event_time"] and p["seller_registered_at"] < p["event_time"]
        assert re.fullmatch(r"u-\d+", p["user_id"]) and re.fullmatch(r"s-\d+", p["seller_id"])
        assert isinstance(p["item_id"], str) and p["item_id"]
        assert HEX64.match(p["card_hash"])
        assert isinstance(p["price"], float) and p["price"] > 0 and round(p["price"], 2) == p["price"]
        assert isinstance(p["n_items"], int) and p["n_items"] >= 1
        assert p["currency"] == "EUR"
    assert len(ids) == len(sim.purchases)
    for lb in sim.labels:
        assert tuple(lb) == LABEL_FIELDS
        assert lb["transaction_id"] in ids
        assert isinstance(lb["is_fraud"], bool) and lb["is_fraud"] == (lb["scenario"] > 0)
        assert lb["source"] in ("chargeback", "review", "card_report")
        assert ISO.match(lb["label_time"])
    times = [p["event_time"] for p in sim.purchases]
    assert times == sorted(times)
    label_times = [lb["label_time"] for lb in sim.labels]
    assert label_times == sorted(label_times)
    text = json.dumps(sim.purchases) + json.dumps(sim.labels)
    assert not LONG_NUMBER.search(text)


def test_summaries(hb):
    daily = hb.daily_summary()
    assert len(daily) == 40 and daily[0]["date"] == "2018-04-01"
    total = hb.summary()
    assert total["n_transactions"] == len(hb.purchases) == sum(d["n_transactions"] for d in daily)
    n_frauds = sum(lb["is_fraud"] for lb in hb.labels)
    assert total["n_frauds"] == n_frauds == sum(d["n_frauds"] for d in daily)
    assert set(total["frauds_by_scenario"]) == {1, 2, 3}
    assert sum(total["frauds_by_scenario"].values()) == n_frauds
    assert sum(total["fraud_share_by_scenario"].values()) == pytest.approx(1.0)
    assert 0 < total["fraud_rate"] < 0.2
    for d in daily:
        assert d["n_compromised_cards"] <= d["n_frauds"]
        assert sum(d["frauds_by_scenario"].values()) == d["n_frauds"]


def test_handbook_volume():
    sim = simulate(small_handbook(n_customers=500, n_terminals=1000, n_days=20), seed=1)
    per_customer_day = len(sim.purchases) / (500 * 20)
    assert per_customer_day == pytest.approx(2 * 0.969, rel=0.1)
    hours = Counter(ts(p["event_time"]).hour for p in sim.purchases)
    assert hours[12] > 3 * hours[2]


# The published run of the handbook's simulator (BENCHMARKS.md): 183 days.
PUBLISHED_TRANSACTIONS, PUBLISHED_FRAUDS, PUBLISHED_COMPROMISED_CARDS_PER_DAY = 1_754_155, 14_681, 80


@pytest.mark.parametrize("seed", [0, 1])
def test_the_full_handbook_preset_is_the_published_run_within_ten_percent(seed):
    total = simulate(preset("handbook"), seed=seed).summary()
    assert total["n_days"] == 183
    assert total["transactions_per_day"] == pytest.approx(PUBLISHED_TRANSACTIONS / 183, rel=0.1)
    assert total["fraud_rate"] == pytest.approx(PUBLISHED_FRAUDS / PUBLISHED_TRANSACTIONS,
                                                rel=0.1)
    assert total["frauds_per_day"] == pytest.approx(PUBLISHED_FRAUDS / 183, rel=0.1)
    assert total["compromised_cards_per_day"] == pytest.approx(
        PUBLISHED_COMPROMISED_CARDS_PER_DAY, rel=0.1)
    # The terminals' frauds are most, the amounts over 220 fewest (each day 2 terminals
    # compromised for 28 days, 3 customers for 14 with a third of their purchases).
    share = total["fraud_share_by_scenario"]
    assert share[2] > 0.5 and share[3] > 0.25 and share[1] < 0.1


@pytest.mark.parametrize("name", ["hb", "demo"])
def test_amount_threshold_is_fraud(name, request):
    sim = request.getfixturevalue(name)
    scen = fraud_scenarios(sim)
    big = [p for p in sim.purchases if p["price"] > 220]
    assert big
    assert all(scen[p["transaction_id"]] > 0 for p in big)
    assert any(scen[p["transaction_id"]] == 1 for p in big)


def test_compromised_terminals(hb):
    scen = fraud_scenarios(hb)
    window = defaultdict(set)
    for c in hb.ground_truth["compromised_terminals"]:
        window[c["seller_id"]].update(range(c["day"], c["day"] + 28))
    assert len(hb.ground_truth["compromised_terminals"]) == 2 * 40
    start = ts(hb.purchases[0]["event_time"]).date()
    n_in_window = 0
    for p in hb.purchases:
        day = (ts(p["event_time"]).date() - start).days
        s = scen[p["transaction_id"]]
        if day in window.get(p["seller_id"], ()):
            n_in_window += 1
            assert s in (1, 2)
        else:
            assert s != 2
    assert n_in_window > 50


def test_compromised_customers(hb):
    scen = fraud_scenarios(hb)
    config = hb.config
    start = ts(hb.purchases[0]["event_time"]).date()
    by_user_day = defaultdict(list)
    for p in hb.purchases:
        by_user_day[(p["user_id"], (ts(p["event_time"]).date() - start).days)].append(p)
    covered = set()
    n3 = 0
    for c in hb.ground_truth["compromised_customers"]:
        covered.update((c["user_id"], d) for d in range(c["day"], c["day"] + config.customer_compromise_days))
    for (user, day), rows in by_user_day.items():
        for p in rows:
            if scen[p["transaction_id"]] == 3:
                n3 += 1
                assert (user, day) in covered
    assert len(hb.ground_truth["compromised_customers"]) == 3 * 40
    in_windows = sum(len(by_user_day.get(k, ())) for k in covered)
    assert 0.15 * in_windows < n3 <= in_windows / 2
    legit_mean = defaultdict(list)
    fraud_amounts = defaultdict(list)
    for p in hb.purchases:
        (fraud_amounts if scen[p["transaction_id"]] == 3 else legit_mean)[p["user_id"]].append(p["price"])
    ratios = sorted(sum(v) / len(v) / (sum(legit_mean[u]) / len(legit_mean[u]))
                    for u, v in fraud_amounts.items() if legit_mean[u])
    assert 3 < ratios[len(ratios) // 2] < 8


def test_handbook_labels(hb):
    assert len(hb.labels) == len(hb.purchases)
    by_id = {p["transaction_id"]: p for p in hb.purchases}
    for lb in hb.labels:
        assert ts(lb["label_time"]) - ts(by_id[lb["transaction_id"]]["event_time"]) == timedelta(days=7)
        assert lb["source"] == ("chargeback" if lb["is_fraud"] else "review")
    assert len({p["card_hash"] for p in hb.purchases}) == len({p["user_id"] for p in hb.purchases})


def test_realistic_labels(demo):
    by_id = {p["transaction_id"]: p for p in demo.purchases}
    sources = Counter()
    for lb in demo.labels:
        delay = ts(lb["label_time"]) - ts(by_id[lb["transaction_id"]]["event_time"])
        sources[lb["source"], lb["is_fraud"]] += 1
        assert timedelta(0) < delay <= timedelta(days=30)
        if not lb["is_fraud"]:
            assert timedelta(days=7) <= delay
        if lb["source"] == "card_report":
            assert lb["scenario"] == 4 and delay <= timedelta(days=1, hours=1)
    assert sources["card_report", True] and sources["chargeback", True] and sources["review", False]
    assert not sources["card_report", False] and not sources["chargeback", False]
    delays = sorted(ts(lb["label_time"]) - ts(by_id[lb["transaction_id"]]["event_time"])
                    for lb in demo.labels if lb["source"] == "chargeback")
    assert delays[0] < timedelta(days=2) and delays[-1] > timedelta(days=7)


def test_partial_legit_labels():
    sim = simulate(small_demo(n_days=6, legit_label_share=0.3), seed=2)
    scen = {lb["transaction_id"]: lb for lb in sim.labels}
    n_fraud_labels = sum(lb["is_fraud"] for lb in sim.labels)
    n_legit = len(sim.purchases) - n_fraud_labels
    assert sum(not lb["is_fraud"] for lb in sim.labels) == pytest.approx(0.3 * n_legit, rel=0.15)
    assert len(scen) == len(sim.labels)


def test_multi_card_users(demo):
    cards = defaultdict(set)
    for p in demo.purchases:
        cards[p["user_id"]].add(p["card_hash"])
    multi = sum(len(c) > 1 for c in cards.values())
    assert 0.03 * len(cards) < multi < 0.2 * len(cards)
    assert max(len(c) for c in cards.values()) <= 3
    owners = defaultdict(set)
    for p in demo.purchases:
        owners[p["card_hash"]].add(p["user_id"])
    assert all(len(u) == 1 for u in owners.values())


def test_extra_scenarios(demo):
    scen = fraud_scenarios(demo)
    rows = defaultdict(list)
    for p in demo.purchases:
        rows[scen[p["transaction_id"]]].append(p)
    assert all(rows[k] for k in range(1, 9)), {k: len(v) for k, v in rows.items()}

    per_card = defaultdict(list)
    for p in rows[4]:
        per_card[p["card_hash"]].append((ts(p["event_time"]), p["seller_id"]))
    bursts = []
    for events in per_card.values():
        events.sort()
        bursts.append([events[0]])
        for prev, cur in zip(events, events[1:]):
            if cur[0] - prev[0] < timedelta(minutes=10):
                bursts[-1].append(cur)
            else:
                bursts.append([cur])
    assert len(bursts) >= 5
    for burst in bursts:
        assert 3 <= len(burst) <= 8
        assert burst[-1][0] - burst[0][0] < timedelta(minutes=30)
        assert len({seller for _, seller in burst}) >= 2

    fraud_sellers = set(demo.ground_truth["fraud_sellers"])
    assert {p["seller_id"] for p in rows[5]} <= fraud_sellers
    for p in rows[5]:
        tenure = ts(p["event_time"]) - ts(p["seller_registered_at"])
        assert timedelta(days=1) <= tenure <= timedelta(days=12)
    assert all(scen[p["transaction_id"]] == 5 for p in demo.purchases if p["seller_id"] in fraud_sellers)

    typical = defaultdict(Counter)
    for p in rows[0]:
        typical[p["seller_id"]][p["n_items"]] += 1
    for p in rows[6]:
        assert p["n_items"] >= 6
        if typical[p["seller_id"]]:
            assert p["n_items"] > max(typical[p["seller_id"]])
    assert max(p["price"] for p in rows[6]) < 400

    for p in rows[7]:
        assert timedelta(0) < ts(p["event_time"]) - ts(p["user_registered_at"]) < timedelta(hours=6)
    new_users = {p["user_id"] for p in rows[7]}
    assert all(scen[p["transaction_id"]] == 7 for p in demo.purchases if p["user_id"] in new_users)

    repeaters = {r["user_id"] for r in demo.ground_truth["repeat_fraud_users"]}
    counts = Counter(p["user_id"] for p in rows[8])
    assert set(counts) <= repeaters and max(counts.values()) >= 2
    legit_old = [p for p in rows[0] if p["user_id"] not in new_users]
    assert min(ts(p["event_time"]) - ts(p["user_registered_at"]) for p in legit_old) > timedelta(minutes=20)


def test_drift_keeps_population():
    kw = dict(n_customers=300, n_terminals=600, n_days=20, drift_day=12, drift_sellers=5)
    drifted = simulate(preset("drift", **kw), seed=4)
    plain = simulate(preset("drift", drift=False, **kw), seed=4)
    scen = fraud_scenarios(drifted)
    assert drifted.config.scenario_ids == (1, 2, 3, 9)
    key = ("event_time", "user_id", "seller_id", "price", "card_hash", "item_id", "n_items")
    base = [tuple(p[k] for k in key) for p in drifted.purchases if scen[p["transaction_id"]] != 9]
    assert base == [tuple(p[k] for k in key) for p in plain.purchases]
    drift_rows = [p for p in drifted.purchases if scen[p["transaction_id"]] == 9]
    assert drift_rows
    assert {p["seller_id"] for p in drift_rows} <= set(drifted.ground_truth["drift_sellers"])
    assert min(p["event_time"] for p in drift_rows) >= "2018-04-13"
    assert all(p["n_items"] >= 5 and p["price"] < 220 for p in drift_rows)
    daily = drifted.daily_summary()
    assert all(d["frauds_by_scenario"][9] == 0 for d in daily[:12])
    assert all(d["frauds_by_scenario"][9] > 0 for d in daily[12:])


def test_drift_is_a_fraud_ring_reported_within_hours():
    kw = dict(n_customers=300, n_terminals=600, n_days=20, drift_day=12, drift_sellers=5)
    sim = simulate(preset("drift", **kw), seed=4)
    by_id = {p["transaction_id"]: p for p in sim.purchases}
    ring = [lb for lb in sim.labels if lb["scenario"] == 9]
    assert 5 * 8 * 8 * 0.7 < len(ring) < 5 * 8 * 8 * 1.3  # 5 sellers, 8 a day, 8 days
    hours = [ts(by_id[lb["transaction_id"]]["event_time"]).hour for lb in ring]
    assert sum(h < 6 for h in hours) > 0.15 * len(ring)  # scripted: at any hour
    reported = [lb for lb in ring if lb["source"] == "card_report"]
    assert 0.6 < len(reported) / len(ring) < 0.8
    delays = [ts(lb["label_time"]) - ts(by_id[lb["transaction_id"]]["event_time"])
              for lb in reported]
    assert max(delays) <= timedelta(days=1) and sorted(delays)[len(delays) // 2] < timedelta(hours=2)
    users = {by_id[lb["transaction_id"]]["user_id"] for lb in ring}
    assert len(users) > 150  # stolen cards of many of the 300 customers, not the neighbours
    # The other presets draw the very same labels as before the ring existed.
    plain = simulate(preset("drift", drift=False, **kw), seed=4)
    assert all(lb["source"] != "card_report" for lb in plain.labels)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_file_round_trip(demo, tmp_path, suffix):
    for kind, events in (("purchases", demo.purchases[:500]), ("labels", demo.labels[:500])):
        path = tmp_path / f"{kind}{suffix}"
        write_events(events, path)
        back = read_events(path)
        assert back == events
        assert [type(v) for v in back[0].values()] == [type(v) for v in events[0].values()]


def test_round_trip_empty_and_bad_suffix(tmp_path):
    for suffix in (".jsonl", ".csv"):
        write_events([], tmp_path / f"e{suffix}")
        assert read_events(tmp_path / f"e{suffix}") == []
    with pytest.raises(ValueError, match="jsonl"):
        write_events([{"a": 1}], tmp_path / "events.json")
    with pytest.raises(ValueError, match="parquet"):
        read_events(tmp_path / "events.txt")


def test_interleave(demo):
    merged = list(interleave(demo))
    assert len(merged) == len(demo.purchases) + len(demo.labels)
    times = [ev["event_time"] if kind == "purchase" else ev["label_time"] for kind, ev in merged]
    assert times == sorted(times)
    seen = set()
    for kind, ev in merged:
        if kind == "purchase":
            seen.add(ev["transaction_id"])
        else:
            assert kind == "label" and ev["transaction_id"] in seen
    assert [ev for kind, ev in merged if kind == "purchase"] == demo.purchases
    assert [ev for kind, ev in merged if kind == "label"] == demo.labels


def test_progress_callback():
    calls = []
    simulate(small_handbook(n_days=5, n_customers=50, n_terminals=100), progress=lambda d, n: calls.append((d, n)))
    assert calls == [(d, 5) for d in range(1, 6)]
