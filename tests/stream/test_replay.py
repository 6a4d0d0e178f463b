"""Replay's merge of purchases and labels in time order."""

from __future__ import annotations

import random

from features.schemas import InvalidEvent, format_time, parse_time
from stream.replay import merge_in_time


def merged_by_two_sorts(purchases, labels):
    """The definition: each kind sorted by time (stable), then merged, purchases first on a tie."""
    def timed(events, key):
        out = []
        for e in events:
            try:
                out.append((parse_time(e.get(key), key), e))
            except InvalidEvent:
                out.append((float("-inf"), e))
        return sorted(out, key=lambda te: te[0])

    ps, ls = timed(purchases, "event_time"), timed(labels, "label_time")
    i = j = 0
    while i < len(ps) or j < len(ls):
        if j >= len(ls) or (i < len(ps) and ps[i][0] <= ls[j][0]):
            yield "purchase", ps[i][0], ps[i][1]
            i += 1
        else:
            yield "label", ls[j][0], ls[j][1]
            j += 1


def test_the_merge_is_the_two_sorted_kinds_merged_ties_and_bad_times_included():
    rng = random.Random(7)
    t0 = 1_522_540_800.0

    def when():
        r = rng.random()
        if r < 0.03:
            return rng.choice(["yesterday", None, 12, True])
        t = t0 + rng.randrange(0, 50) * 60.0  # many ties
        return format_time(t) if r < 0.8 else int(t * 1000)

    purchases = [{"transaction_id": f"p{i}", "event_time": when()} for i in range(3000)]
    labels = [{"transaction_id": f"l{i}", "label_time": when()} for i in range(2000)]
    got = list(merge_in_time(purchases, labels))
    want = list(merged_by_two_sorts(purchases, labels))
    assert [(k, t, e["transaction_id"]) for k, t, e in got] == \
        [(k, t, e["transaction_id"]) for k, t, e in want]
