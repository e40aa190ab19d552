# SPDX-License-Identifier: Apache-2.0
"""Bounce classification: kumod's shipped rules on a corpus of typical
receiver replies (through kumo-bounce, the same classifier), and
kumo.configure_bounce_classifier filling bounce_classification in the log
records of a relay whose sink refuses and defers."""

import os
import subprocess

from conftest import KUMOD_BIN, REPO, run_kumod
from test_relay import RELAY_POLICY, records, sink_start, send, wait_until

TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.dirname(KUMOD_BIN)
KUMO_BOUNCE = os.path.join(TOOLS_BIN, "kumo-bounce")
RULES = os.path.join(REPO, "share", "bounce_classifier", "kumod.toml")
CORPUS = os.path.join(REPO, "tests", "data", "bounce_corpus.tsv")


def corpus():
    rows = []
    with open(CORPUS, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            label, response = line.rstrip("\n").split("\t", 1)
            rows.append((label, response))
    return rows


def test_shipped_rules_classify_the_corpus():
    rows = corpus()
    assert len(rows) >= 50
    out = subprocess.run([KUMO_BOUNCE, RULES], input="\n".join(r for _, r in rows) + "\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    got = [line.split("\t", 1) for line in out.stdout.splitlines()]
    assert [g[1] for g in got] == [r for _, r in rows]
    wrong = [(want, g[0], r) for (want, r), g in zip(rows, got) if want != g[0]]
    assert wrong == []


def test_bad_rules_are_refused_with_the_place(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules]\nSpamBlock = [ "fine", "(unclosed" ]\n')
    out = subprocess.run([KUMO_BOUNCE, str(bad)], input="", capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1
    assert out.stderr.startswith("kumo-bounce: %s: rules.SpamBlock[2]: invalid regular "
                                 "expression '(unclosed' at offset " % bad), out.stderr
    (tmp_path / "policy.lua").write_text(
        "kumo.on('init', function() kumo.configure_bounce_classifier{ files = { '%s' } } end)\n"
        % bad)
    out = run_kumod(["--validate", "--policy", "policy.lua"], cwd=str(tmp_path))
    assert out.returncode == 1
    assert "configure_bounce_classifier: %s: rules.SpamBlock[2]: invalid regular expression" \
        % bad in out.stderr, out.stderr


def test_records_carry_the_classification(kumod, tmp_path):
    custom = tmp_path / "custom.json"
    custom.write_text('// ours first\n{"rules": {"SinkRefused": ["permfail requested"],'
                      ' "SinkDeferred": ["tempfail requested"]}}\n')
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    # configure the classifier inside init: prepend a call to the policy's init
    text = RELAY_POLICY.format(var=var, mx_list="'127.0.0.1:%d'" % sink.smtp_port, retry="1h",
                               max_age="2h", flush="true").replace(
        "kumo.on('init', function()",
        "kumo.on('init', function()\n  kumo.configure_bounce_classifier{ files = { '%s', '%s' } }"
        % (custom, RULES), 1)
    relay = kumod(text, policy_name="relay.lua")
    send(relay.smtp_port, ["permfail@example.com"], "refused\r\n")
    send(relay.smtp_port, ["tempfail@example.com"], "deferred\r\n")
    send(relay.smtp_port, ["550-nope@example.com"], "refused, no rule\r\n")
    send(relay.smtp_port, ["ok@example.com"], "delivered\r\n")

    def outcomes():
        recs = [r for r in records(var / "logs")
                if r["type"] in ("Bounce", "TransientFailure", "Delivery")]
        return recs if len(recs) >= 4 else None

    recs = wait_until(outcomes, timeout=20)
    assert recs, relay.stderr()
    assert relay.stop() == 0
    by_rcpt = {r["recipient"]: (r["type"], r["bounce_classification"]) for r in recs}
    assert by_rcpt["permfail@example.com"] == ("Bounce", "SinkRefused")
    assert by_rcpt["tempfail@example.com"] == ("TransientFailure", "SinkDeferred")
    assert by_rcpt["550-nope@example.com"] == ("Bounce", "Uncategorized")
    assert by_rcpt["ok@example.com"] == ("Delivery", "Uncategorized")
    receptions = [r for r in records(var / "logs") if r["type"] == "Reception"]
    assert receptions and all(r["bounce_classification"] == "Uncategorized" for r in receptions)


def test_configured_once(tmp_path):
    (tmp_path / "policy.lua").write_text(
        "kumo.on('init', function()\n"
        "  kumo.configure_bounce_classifier{ files = { '%s' } }\n"
        "  kumo.configure_bounce_classifier{ files = { '%s' } }\nend)\n" % (RULES, RULES))
    out = run_kumod(["--policy", "policy.lua"], cwd=str(tmp_path), timeout=20)
    assert out.returncode == 1
    assert "configure_bounce_classifier: already configured" in out.stderr, out.stderr
