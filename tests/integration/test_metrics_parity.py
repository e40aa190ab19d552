# SPDX-License-Identifier: Apache-2.0
"""KumoMTA metric parity: the KumoMTA names and labels kumod claims appear
in a running kumod's /metrics with the right type and label; every metric
docs/grafana-dashboard.json queries is exported; /metrics?prefix= filters."""

import json
import os
import re
import smtplib
import urllib.request

from conftest import REPO
from test_relay import wait_until
from test_trace_smtp import DeferOnceMx

POLICY = """
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.configure_local_logs{ log_dir = '%(var)s/logs' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
  kumo.start_http_listener{ listen = '127.0.0.1:0' }
end)
kumo.on('get_queue_config', function(domain)
  return kumo.make_queue_config{ retry_interval = '1s', max_retry_interval = '1s',
                                 protocol = { smtp = { mx_list = { '127.0.0.1:%(mx)d' } } } }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ prohibited_hosts = {}, enable_tls = 'Disabled' }
end)
"""

# (name, type, label) from KumoMTA's metric list (reference sheet §12) that
# kumod exports; label None: unlabeled.
KUMO_METRICS = [
    ("connection_count", "gauge", "service"),
    ("delayed_count", "gauge", "queue"),
    ("scheduled_count", "gauge", "queue"),
    ("scheduled_count_total", "gauge", None),
    ("scheduled_queue_count", "gauge", None),
    ("ready_count", "gauge", "service"),
    ("total_connection_count", "counter", "service"),
    ("total_connections_denied", "counter", "service"),
    ("total_messages_received", "counter", "service"),
    ("total_messages_delivered", "counter", "service"),
    ("total_messages_transfail", "counter", "service"),
    ("total_messages_fail", "counter", "service"),
    ("message_count", "gauge", None),
    ("message_data_resident_count", "gauge", None),
    ("message_meta_resident_count", "gauge", None),
    ("message_save_latency", "histogram", None),
    ("deliver_message_latency_rollup", "histogram", "service"),
    ("log_submit_full", "counter", "logger"),
    ("memory_usage", "gauge", None),
    ("memory_limit", "gauge", None),
]

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')


def parse(text):
    """{name: {"type": t, "samples": [(labels dict, value)]}} (histogram
    samples under their _bucket/_sum/_count names)."""
    fams, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, t = line.split(" ", 3)
            types[name] = t
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        fams.setdefault(m.group(1), []).append((labels, float(m.group(4))))
    return types, fams


def scrape(port, query=""):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics%s" % (port, query),
                                timeout=10) as r:
        return r.read().decode()


def send(port, rcpt):
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        s.sendmail("sender@example.com", [rcpt], b"Subject: metrics\r\n\r\nbody\r\n")


def dashboard_metrics():
    d = json.load(open(os.path.join(REPO, "docs", "grafana-dashboard.json")))
    exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in d["templating"]["list"]]
    names = set()
    for e in exprs:
        # metric selectors: an identifier followed by a label matcher, or the
        # first argument of label_values()
        names.update(re.findall(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{', e))
        names.update(re.findall(r'label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)', e))
    assert exprs and names
    return names, d


def test_kumo_metric_names_labels_and_dashboard(kumod, tmp_path):
    mx = DeferOnceMx()
    try:
        k = kumod(POLICY % {"var": tmp_path / "var", "mx": mx.port})
        http = k.listeners["http"][0][1]
        send(k.smtp_port, "first@dest.example")   # 451 once, then delivered
        send(k.smtp_port, "second@dest.example")

        def ready():
            types, fams = parse(scrape(http))
            have = set(fams) | set(types)
            need = {n for n, _, _ in KUMO_METRICS}
            want_samples = {"total_messages_transfail", "deliver_message_latency_rollup_bucket",
                            "message_save_latency_bucket"}
            if mx.delivered >= 2 and need <= have and want_samples <= set(fams) and \
                    any(v > 0 for _, v in fams.get("total_messages_transfail", [])):
                return types, fams
            return None
        got = wait_until(ready, timeout=30)
        assert got, scrape(http)
        types, fams = got
        for name, typ, label in KUMO_METRICS:
            assert types.get(name) == typ, (name, types.get(name))
            samples = fams.get(name + "_bucket" if typ == "histogram" else name, [])
            assert samples, name
            for labels, _v in samples:
                keys = set(labels) - {"le"}
                assert keys == ({label} if label else set()), (name, labels)
        rx = {l["service"]: v for l, v in fams["total_messages_received"]}
        assert rx.get("esmtp_listener") == 2
        conns = {l["service"]: v for l, v in fams["total_connection_count"]}
        assert conns.get("esmtp_listener") >= 2
        delivered = sum(v for _, v in fams["total_messages_delivered"])
        assert delivered == 2
        assert {l["service"] for l, _ in fams["deliver_message_latency_rollup_count"]} == \
            {"smtp_client"}
        # the dashboard queries only what kumod exports
        names, d = dashboard_metrics()
        exported = set(types)
        for n in sorted(names):
            base = re.sub(r"_(bucket|sum|count)$", "", n) if n not in exported else n
            assert base in exported, "dashboard queries %s, not in kumod's /metrics" % n
            if n.endswith("_bucket"):
                assert types[base] == "histogram"
                assert n in fams
        assert len(d["panels"]) >= 10
        # ?prefix= keeps whole families by name prefix
        text = scrape(http, "?prefix=total_messages_")
        t2, f2 = parse(text)
        assert set(t2) == {n for n in types if n.startswith("total_messages_")}
        assert set(t2) >= {"total_messages_received", "total_messages_delivered"}
        assert all(n.startswith("total_messages_") for n in f2)
        assert parse(scrape(http, "?prefix=no_such_metric_")) == ({}, {})
        assert k.stop() == 0
    finally:
        mx.close()
