# SPDX-License-Identifier: Apache-2.0
"""batch_handling = 'BatchByDomain': one message per recipient domain, several
recipients per delivery transaction, and per-recipient outcomes when the
receiving side refuses some of them (relay -> sink, as in test_relay.py)."""

import glob
import json
import os
import time

from test_relay import RELAY_POLICY, captured, records, send, sink_start, wait_until

BATCH_POLICY = RELAY_POLICY.replace(
    "relay_hosts = {{ '127.0.0.1' }} }}",
    "relay_hosts = {{ '127.0.0.1' }}, batch_handling = 'BatchByDomain' }}")


def batch_relay(kumod, var, sink_port, max_age="1h"):
    assert BATCH_POLICY != RELAY_POLICY
    text = BATCH_POLICY.format(var=var, mx_list="'127.0.0.1:%d'" % sink_port, retry="1s",
                               max_age=max_age, flush="true")
    return kumod(text, policy_name="batch.lua")


def spool_meta(var):
    out = {}
    for f in glob.glob(os.path.join(str(var), "spool", "meta", "**"), recursive=True):
        name = os.path.basename(f)
        if os.path.isfile(f) and len(name) == 32:
            # the JSON document sits inside the spool record's framing
            raw = open(f, "rb").read().decode("utf-8", "replace")
            out[name], _ = json.JSONDecoder().raw_decode(raw, raw.index("{"))
    return out


def test_batch_all_accepted_is_one_transaction_and_one_record(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay = batch_relay(kumod, tmp_path / "var", sink.smtp_port)
    rcpts = ["a@example.com", "b@EXAMPLE.com", "c@example.net"]
    _, refused = send(relay.smtp_port, rcpts, "batched\r\n")
    assert refused == {}
    # the sink (BifurcateAlways) stores one file per recipient it accepted
    assert wait_until(lambda: len(captured(capture)) >= 3), relay.stderr()
    assert relay.stop() == 0
    recs = records(tmp_path / "var" / "logs")
    rec = [r for r in recs if r["type"] == "Reception"]
    assert sorted(json.dumps(r["recipient"]) for r in rec) == sorted(
        [json.dumps(["a@example.com", "b@EXAMPLE.com"]), json.dumps("c@example.net")]), rec
    dl = [r for r in recs if r["type"] == "Delivery"]
    assert sorted(json.dumps(r["recipient"]) for r in dl) == sorted(
        [json.dumps(["a@example.com", "b@EXAMPLE.com"]), json.dumps("c@example.net")]), dl
    # the two example.com recipients went in one SMTP transaction: the sink's
    # Received headers carry one message id for both
    got = [open(f, "rb").read() for f in captured(capture)]
    batch = [g for g in got if b"for <c@example.net>" not in g.split(b"\r\n\r\n")[0]]
    assert len(batch) == 2
    # the relay's own Received (second one down) has no "for" clause for a batch
    relay_rcvd = [g.split(b"Received: ")[2].split(b"\r\n")[0] for g in batch]
    assert all(b" for <" not in r for r in relay_rcvd), relay_rcvd


def test_batch_mixed_outcomes_per_recipient(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    relay = batch_relay(kumod, var, sink.smtp_port, max_age="30m")
    rcpts = ["ok1@example.com", "permfail@example.com", "tempfail@example.com",
             "ok2@example.com"]
    _, refused = send(relay.smtp_port, rcpts, "mixed\r\n")
    assert refused == {}

    def split_done():
        recs = records(var / "logs")
        return (len([r for r in recs if r["type"] == "Delivery"]) >= 2
                and any(r["type"] == "TransientFailure" for r in recs))
    assert wait_until(split_done), relay.stderr()
    # the spool now holds the message for the tempfail recipient only
    metas = wait_until(lambda: [m for m in spool_meta(var).values()
                                if m.get("recipient") == "tempfail@example.com"])
    assert len(metas) == 1, spool_meta(var)
    # the split explains itself (batch_split tracepoint, INFO)
    relay.wait_for("batch of 4 recipients split: 3 delivered or bounced, 1 requeued")
    assert relay.stop() == 0
    recs = records(var / "logs")
    dl = [r for r in recs if r["type"] == "Delivery"]
    assert sorted(r["recipient"] for r in dl) == ["ok1@example.com", "ok2@example.com"], dl
    assert all(r["response"]["code"] == 250 for r in dl)
    bo = [r for r in recs if r["type"] == "Bounce"]
    assert [r["recipient"] for r in bo] == ["permfail@example.com"], bo
    assert bo[0]["response"]["code"] == 550
    assert "permfail requested" in bo[0]["response"]["content"]
    tf = [r for r in recs if r["type"] == "TransientFailure"]
    assert tf and tf[0]["recipient"] == "tempfail@example.com", tf
    assert tf[0]["response"]["code"] == 451
    assert len(captured(capture)) == 2

    # restart: only the tempfail recipient is attempted again; nothing is
    # delivered twice
    n_before = len(captured(capture))
    relay = batch_relay(kumod, var, sink.smtp_port, max_age="30m")

    def retried():
        return len([r for r in records(var / "logs") if r["type"] == "TransientFailure"]) > len(tf)
    assert wait_until(retried, timeout=15), relay.stderr()
    assert relay.stop() == 0
    recs = records(var / "logs")
    later = [r for r in recs if r["type"] == "TransientFailure"][len(tf):]
    assert all(r["recipient"] == "tempfail@example.com" for r in later), later
    assert len([r for r in recs if r["type"] == "Delivery"]) == 2
    assert len(captured(capture)) == n_before
