"""The backtest report: metrics JSON, PNG plots and one HTML page (stream/report.py)."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import orjson
import pytest

from features.state import DAY
from models.quality import card_precision_at_k
from stream.replay import ReplayResult, ScoredPurchase
from stream.report import write_report

T0 = 17_622 * DAY  # 2018-04-01


def _result(days: int = 3, per_day: int = 400, seed: int = 0) -> ReplayResult:
    """Purchases of 150 cards, 2% frauds, two models that rank the frauds higher than chance."""
    rng = np.random.default_rng(seed)
    scored = []
    for day in range(days):
        for i in range(per_day):
            fraud = bool(rng.random() < 0.02)
            signal = 0.6 if fraud else 0.0
            scores = {"dynamic": float(np.clip(rng.random() * 0.5 + signal, 0, 1)),
                      "static": float(np.clip(rng.random() * 0.8 + signal / 2, 0, 1))}
            scored.append(ScoredPurchase(f"t{day}-{i}", T0 + day * DAY + i * 200.0,
                                         f"c{int(rng.integers(150))}", scores,
                                         scores["dynamic"] > 0.5, fraud))
    return ReplayResult(scored=scored, n_purchases=len(scored), n_labels=len(scored),
                        seconds=1.5)


DRIFT = [
    {"time": T0 + 1.5 * DAY, "detector": "error", "signal": "dynamic", "statistic": 7.25,
     "stratum": "fraud", "date": "2018-04-02"},
    {"time": T0 + 0.5 * DAY, "detector": "psi", "signal": "<amount>", "statistic": 0.2149,
     "stratum": None, "date": "2018-04-01"},
]


class _Page(HTMLParser):
    """Tags opened and closed, table rows, and the images' sources, of a page."""

    VOID = {"meta", "img", "br"}

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.open.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")  # a cell, empty until its text comes

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self.open and self.open[-1] in ("td", "th"):
            self.rows[-1][-1] += data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = _result()
    metrics = write_report(result, out, models=["dynamic", "static"], drift=DRIFT)
    return out, result, metrics


def test_the_report_writes_its_metrics_its_plots_and_its_page(report):
    out, result, metrics = report
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "daily.png", "metrics.json",
                                                    "report.html"]
    assert orjson.loads((out / "metrics.json").read_bytes()) == metrics
    assert list(metrics["daily"]) == ["2018-04-01", "2018-04-02", "2018-04-03"]
    assert metrics["models"]["dynamic"]["n"] == len(result.scored)
    assert metrics["models"]["dynamic"]["roc_auc"] > 0.9  # the frauds score 0.6 higher
    assert metrics["models"]["static"]["roc_auc"] < metrics["models"]["dynamic"]["roc_auc"]


def test_the_run_card_precision_leaves_out_cards_found_before_and_each_day_stands_alone(report):
    _, result, metrics = report
    y = np.array([r.is_fraud for r in result.scored])
    s = np.array([r.scores["dynamic"] for r in result.scored])
    days = np.array([int(r.event_ts // DAY) for r in result.scored])
    cards = np.array([r.card_hash for r in result.scored])
    run = metrics["models"]["dynamic"]["card_precision_at_100"]
    assert run == pytest.approx(card_precision_at_k(days, cards, y, s, k=100), abs=1e-6)
    daily = [row["dynamic"]["card_precision_at_100"] for row in metrics["daily"].values()]
    alone = [card_precision_at_k(days[days == d], cards[days == d], y[days == d],
                                 s[days == d], k=100) for d in np.unique(days)]
    assert daily == pytest.approx(alone, abs=1e-6)
    assert run <= np.mean(daily)  # later days have fewer cards left to find


def test_the_plots_are_pictures_with_something_drawn(report):
    import matplotlib.image

    out, _, _ = report
    for name in ("curves.png", "daily.png"):
        pixels = matplotlib.image.imread(out / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 800
        assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_the_page_is_well_formed_and_embeds_the_plots(report):
    out, _, _ = report
    page = _Page()
    page.feed((out / "report.html").read_text())
    page.close()
    assert page.open == []  # every tag opened was closed, in order
    pngs = [base64.b64decode(src.split(",", 1)[1]) for src in page.images]
    assert pngs == [(out / "curves.png").read_bytes(), (out / "daily.png").read_bytes()]
    quality = [r for r in page.rows if r and r[0] in ("dynamic", "static")]
    assert [r[0] for r in quality] == ["dynamic", "static"]
    assert all(re.fullmatch(r"[01]\.\d{3}", cell) for r in quality for cell in r[1:4])
    text = " ".join(page.text)
    assert "1,200 purchases and 1,200 labels" in text
    assert "left out of the later days" in text


def test_drift_detections_are_a_table_in_time_order_escaped(report):
    out, _, _ = report
    page = _Page()
    page.feed((out / "report.html").read_text())
    drift = [r for r in page.rows if r and r[0].startswith("2018-")]
    assert drift == [["2018-04-01 12:00:00", "psi", "<amount>", "", "0.215"],
                     ["2018-04-02 12:00:00", "error", "dynamic", "fraud", "7.250"]]
    assert "&lt;amount&gt;" in (out / "report.html").read_text()


def test_a_run_without_drift_says_so(tmp_path):
    write_report(_result(days=1), tmp_path, models=["dynamic"])
    page = _Page()
    page.feed((tmp_path / "report.html").read_text())
    assert "Drift detections" in page.text and "none" in page.text
