"""The backtest report a person looks at: metrics JSON, PNG plots and one HTML page.

Quality per model (ROC AUC, average precision, card precision@k) overall and
per day, ROC and precision-recall curves, the alert rate per day, and drift
detections marked on the time axis.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson

from features.state import DAY
from models.quality import average_precision, card_precision_at_k, roc_auc
from stream.replay import ReplayResult


def _arrays(result: ReplayResult, model: str):
    s = np.array([r.scores.get(model, math.nan) for r in result.scored], dtype=float)
    y = np.array([r.is_fraud for r in result.scored], dtype=bool)
    days = np.array([int(r.event_ts // DAY) for r in result.scored])
    cards = np.array([r.card_hash for r in result.scored])
    return s, y, days, cards


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def quality(y, s, days, cards, k: int) -> dict:
    return {"roc_auc": _clean(roc_auc(y, s)), "average_precision": _clean(average_precision(y, s)),
            f"card_precision_at_{k}": _clean(card_precision_at_k(days, cards, y, s, k=k)),
            "n": int(len(y)), "n_frauds": int(np.sum(y))}


def compute_metrics(result: ReplayResult, models: Sequence[str], k: int = 100,
                    drift: Sequence[dict] = ()) -> dict:
    """Everything the report shows, as plain JSON-ready values."""
    out: dict = {"n_purchases": result.n_purchases, "n_labels": result.n_labels,
                 "n_rejected": result.n_rejected, "seconds": round(result.seconds, 3),
                 "events_per_second": round(result.events_per_second, 1),
                 "models": {}, "daily": {}, "drift": list(drift)}
    alerted = np.array([r.alerted for r in result.scored], dtype=bool)
    for model in models:
        s, y, days, cards = _arrays(result, model)
        keep = ~np.isnan(s)
        out["models"][model] = quality(y[keep], s[keep], days[keep], cards[keep], k)
    if not result.scored:
        return out
    s, y, days, cards = _arrays(result, models[0])
    out["alerts"] = {"n": int(alerted.sum()), "true": int((alerted & y).sum()),
                     "precision": _clean(((alerted & y).sum() / alerted.sum())
                                         if alerted.any() else math.nan),
                     "recall": _clean(((alerted & y).sum() / y.sum()) if y.any() else math.nan)}
    for day in np.unique(days):
        sel = days == day
        row = {"date": str(np.datetime64(int(day), "D")), "n": int(sel.sum()),
               "alert_rate": _clean(alerted[sel].mean())}
        for model in models:
            ms, my, md, mc = (a[sel] for a in _arrays(result, model))
            row[model] = quality(my, ms, md, mc, k)
        out["daily"][str(np.datetime64(int(day), "D"))] = row
    return out


def _curves(y: np.ndarray, s: np.ndarray):
    order = np.argsort(-s, kind="mergesort")
    ys = y[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    n_pos, n_neg = max(1, int(y.sum())), max(1, int((~y).sum()))
    tpr, fpr = np.r_[0, tp / n_pos], np.r_[0, fp / n_neg]
    precision = tp / np.arange(1, len(ys) + 1)
    recall = tp / n_pos
    return fpr, tpr, recall, precision


def write_report(result: ReplayResult, out_dir: str | Path, models: Sequence[str],
                 k: int = 100, drift: Sequence[dict] = (), title: str = "fraudstream backtest"
                 ) -> dict:
    """Write ``metrics.json``, the PNG plots and ``report.html`` into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(result, models, k, drift)
    (out / "metrics.json").write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
    pngs = []

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for model in models:
        s, y, _, _ = _arrays(result, model)
        keep = ~np.isnan(s)
        if not y[keep].any():
            continue
        fpr, tpr, recall, precision = _curves(y[keep], s[keep])
        q = metrics["models"][model]
        roc_ax.plot(fpr, tpr, label=f"{model} (AUC {q['roc_auc']:.3f})")
        pr_ax.plot(recall, precision, label=f"{model} (AP {q['average_precision']:.3f})")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.set(title="ROC curve", xlabel="false positive rate", ylabel="true positive rate")
    pr_ax.set(title="Precision-recall curve", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right" if ax is roc_ax else "upper right")
        ax.grid(alpha=0.3)
    pngs.append(_save(fig, out / "curves.png", plt))

    dates = [np.datetime64(d) for d in metrics["daily"]]
    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    for ax, key, name in zip(axes, ("roc_auc", "average_precision", f"card_precision_at_{k}"),
                             ("ROC AUC", "average precision", f"card precision@{k}")):
        for model in models:
            ax.plot(dates, [_nan(row[model][key]) for row in metrics["daily"].values()],
                    marker=".", label=model)
        ax.set(ylabel=name)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    axes[3].bar(dates, [row["alert_rate"] or 0 for row in metrics["daily"].values()],
                color="tab:red")
    axes[3].set(ylabel="alert rate")
    for ax in axes:
        for d in drift:
            ax.axvline(np.datetime64(d["date"]), color="purple", linestyle="--", alpha=0.6)
    axes[0].set_title("Quality per day" + (" (dashed: drift detected)" if drift else ""))
    fig.autofmt_xdate()
    pngs.append(_save(fig, out / "daily.png", plt))

    (out / "report.html").write_text(_html(title, metrics, models, k, pngs))
    return metrics


def _nan(v):
    return math.nan if v is None else v


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _html(title: str, metrics: dict, models: Sequence[str], k: int, pngs: list[Path]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{_fmt(q['roc_auc'])}</td>"
        f"<td>{_fmt(q['average_precision'])}</td><td>{_fmt(q[f'card_precision_at_{k}'])}</td>"
        f"<td>{q['n']:,}</td><td>{q['n_frauds']:,}</td></tr>"
        for m, q in metrics["models"].items())
    alerts = metrics.get("alerts", {})
    drift = _drift_table(metrics["drift"])
    images = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">' for p in pngs)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
img{{max-width:100%;margin:1em 0}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{metrics['n_purchases']:,} purchases and {metrics['n_labels']:,} labels replayed in
{metrics['seconds']:.1f} s ({metrics['events_per_second']:,.0f} events/s);
{metrics['n_rejected']:,} rejected inputs.</p>
<h2>Quality</h2>
<table><tr><th>model</th><th>ROC AUC</th><th>average precision</th><th>card precision@{k}</th>
<th>purchases</th><th>frauds</th></tr>{rows}</table>
<p>Card precision@{k}: each day, the share of compromised cards among the {k} cards
with the highest scores. Over the whole run, as the fraud-detection handbook defines it,
a card found compromised on an earlier day is left out of the later days, so a long run
has fewer and fewer cards left to find; the daily plot shows each day on its own, with
no card left out.</p>
<p>Alerts: {alerts.get('n', 0):,}, of which {alerts.get('true', 0):,} frauds
(precision {_fmt(alerts.get('precision'))}, recall {_fmt(alerts.get('recall'))}).</p>
<h2>Drift detections</h2>{drift}
<h2>Plots</h2>{images}
</body></html>
"""


def _drift_table(drift: Sequence[dict]) -> str:
    """The drift detections as a table, in time order (one row each)."""
    if not drift:
        return "<p>none</p>"
    rows = []
    for d in sorted(drift, key=lambda d: d.get("time") or 0.0):
        when = d.get("time")
        stamp = (str(np.datetime64(int(when), "s")).replace("T", " ")
                 if isinstance(when, (int, float)) and math.isfinite(when) else d.get("date"))
        statistic = d.get("statistic")
        cells = (stamp, d.get("detector"), d.get("signal"), d.get("stratum") or "",
                 f"{statistic:.3f}" if isinstance(statistic, (int, float)) else statistic)
        rows.append("<tr>" + "".join(f"<td>{html.escape(str('' if c is None else c))}</td>"
                                     for c in cells) + "</tr>")
    return ("<table><tr><th>when (UTC, event time)</th><th>detector</th><th>signal</th>"
            "<th>stratum</th><th>statistic</th></tr>" + "".join(rows) + "</table>")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
