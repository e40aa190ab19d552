# SPDX-License-Identifier: Apache-2.0
"""The sink as a mail catcher: KUMO_SINK_HTTP turns on kumo.start_mail_catcher and the
JSON API under /api/v1/ (sink/README.md)."""

import os
import smtplib
import threading
import time

import pytest
import requests

from conftest import REPO, free_port
from smtpraw import spawn_kumod, stop_kumod

SINK = os.path.join(REPO, "sink", "sink.lua")


class Catcher:
    def __init__(self, k, smtp_port, http_port, store):
        self.k, self.smtp_port, self.store = k, smtp_port, store
        self.base = "http://127.0.0.1:%d" % http_port

    def get(self, path, **kw):
        return requests.get(self.base + path, timeout=kw.pop("timeout", 10), **kw)

    def delete(self, path, **kw):
        return requests.delete(self.base + path, timeout=10, **kw)

    def send(self, to, subject="hello", body="body\r\n", sender="alice@example.com",
             headers=""):
        msg = ("From: Alice <%s>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <m-%s@test>\r\n%s\r\n%s"
               % (sender, to, subject, time.monotonic_ns(), headers, body)).encode()
        with smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.test",
                          timeout=10) as s:
            assert s.sendmail(sender, [to], msg) == {}
        return msg

    def wait_total(self, n, tag=None):
        """Polls the list until exactly n messages are stored (bounded)."""
        deadline = time.monotonic() + 10
        while True:
            params = {"tag": tag} if tag else {}
            r = self.get("/api/v1/messages", params=params).json()
            if r["messages_count"] == n or time.monotonic() > deadline:
                assert r["messages_count"] == n, r
                return r
            time.sleep(0.02)


@pytest.fixture
def catcher(tmp_path):
    started = []

    def start(env=None, store=None):
        smtp_port, http_port = free_port(), free_port()
        store = store or str(tmp_path / "store")
        e = {"KUMO_SINK_PORT": str(smtp_port), "KUMO_SINK_HTTP": "127.0.0.1:%d" % http_port,
             "KUMO_SINK_STORE": store, "KUMO_SINK_BUSY_POLL": "0",
             "KUMOD_LOG": "kumod=info,kumo_server_common=info,lua=info"}
        e.update(env or {})
        k = spawn_kumod(tmp_path / ("sink%d" % len(started)), env=e, policy_path=SINK)
        started.append(k)
        return Catcher(k, smtp_port, http_port, store)

    yield start
    for k in started:
        stop_kumod(k)


def test_capture_list_get_raw(catcher):
    c = catcher()
    settings = c.k.wait_for("sink settings: ")
    assert "ui=%s/ catcher=%s/api/v1/messages" % (c.base, c.base) in settings, settings
    body = "Your code is 482913.\r\nVerify: https://app.test/verify?t=abc&u=1\r\n"
    raw = c.send("Bob <bob@example.com>", subject="=?utf-8?B?aMOpbGxv?= world", body=body)
    lst = c.wait_total(1)
    assert (lst["total"], lst["count"], lst["start"], lst["unread"]) == (1, 1, 0, 1)
    s = lst["messages"][0]
    assert s["Subject"] == "h\u00e9llo world"
    assert s["From"] == {"Name": "Alice", "Address": "alice@example.com"}
    assert s["To"] == [{"Name": "Bob", "Address": "bob@example.com"}]
    assert s["Read"] is False and s["Tags"] == []
    assert s["Snippet"].startswith("Your code is 482913. Verify: https://app.test/")
    assert s["Envelope"]["To"] == ["bob@example.com"]
    m = c.get("/api/v1/message/" + s["ID"]).json()
    assert m["Text"] == body and m["HTML"] == "" and m["Attachments"] == []
    assert m["Links"] == ["https://app.test/verify?t=abc&u=1"] and m["Codes"] == ["482913"]
    assert m["Read"] is True
    assert c.get("/api/v1/messages").json()["unread"] == 0
    r = c.get("/api/v1/message/%s/raw" % s["ID"])
    assert r.status_code == 200 and r.content.endswith(raw)  # after kumod's Received:
    assert s["Size"] == len(r.content)
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = c.get("/api/v1/message/%s/raw" % s["ID"], params={"dl": "1"})
    assert r.headers["Content-Type"] == "message/rfc822"
    assert r.headers["Content-Disposition"] == 'attachment; filename="%s.eml"' % s["ID"]
    h = c.get("/api/v1/message/%s/headers" % s["ID"]).json()
    assert h["Subject"] == ["h\u00e9llo world"] and h["To"] == ["Bob <bob@example.com>"]
    assert c.get("/api/v1/message/latest").json()["ID"] == s["ID"]
    assert c.get("/api/v1/message/0123456789abcdef0123456789abcdef").status_code == 404
    # one log line per message with id, from, to, size and outcome
    line = c.k.wait_for("sink message id=%s" % s["ID"])
    assert "from=<alice@example.com> to=<bob@example.com> size=%d outcome=captured" % s["Size"] \
        in line, line


def test_mime_parts_and_attachments(catcher):
    c = catcher()
    mime = ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
            "--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
            "--YY\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n"
            "--YY\r\nContent-Type: text/html\r\n\r\n<p>Hi <a href=\"https://x.test/a\">x</a>"
            "</p><script>alert(1)</script>\r\n--YY--\r\n"
            "--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"report.pdf\"\r\n\r\nJVBERi0=\r\n--XX--\r\n")
    c.send("bob@example.com", headers=mime.split("\r\n\r\n", 1)[0] + "\r\n",
           body=mime.split("\r\n\r\n", 1)[1])
    s = c.wait_total(1)["messages"][0]
    assert s["Attachments"] == 1
    m = c.get("/api/v1/message/" + s["ID"]).json()
    assert m["Text"] == "caf\u00e9"
    assert m["HTML"].startswith("<p>Hi <a href=\"https://x.test/a\">")
    assert m["Attachments"] == [{"PartID": "3", "FileName": "report.pdf",
                                 "ContentType": "application/pdf", "ContentID": "", "Size": 5}]
    assert m["Links"] == ["https://x.test/a"]


def test_search_paging_exact_totals(catcher):
    c = catcher()
    for i in range(7):
        c.send("user%d@example.com" % i, subject="order %d" % i,
               body="needle-%s\r\n" % ("even" if i % 2 == 0 else "odd"))
    c.wait_total(7)
    page = c.get("/api/v1/messages", params={"start": 5, "limit": 3}).json()
    assert (page["total"], page["messages_count"], page["count"], page["start"]) == (7, 7, 2, 5)
    assert [m["Subject"] for m in page["messages"]] == ["order 1", "order 0"]  # newest first
    r = c.get("/api/v1/search", params={"query": "needle-even", "limit": 2}).json()
    assert (r["messages_count"], r["count"]) == (4, 2)  # exact, body text searched
    assert [m["Subject"] for m in r["messages"]] == ["order 6", "order 4"]
    r = c.get("/api/v1/search", params={"query": "to:user3@ subject:order"}).json()
    assert [m["Subject"] for m in r["messages"]] == ["order 3"]
    r = c.get("/api/v1/search", params={"query": 'from:alice subject:"order 5"'}).json()
    assert r["messages_count"] == 1
    assert c.get("/api/v1/search", params={"query": "from:nobody"}).json()["messages_count"] == 0
    # no silent caps: an oversize page is refused, not cut
    r = c.get("/api/v1/messages", params={"limit": 1001})
    assert r.status_code == 400 and "limit" in r.json()["error"]
    assert c.get("/api/v1/search").status_code == 400


def test_tags_namespaces(catcher):
    c = catcher()
    c.send("bob+signup@example.com", subject="a")
    c.send("bob+reset@example.com", subject="b")
    c.send("carol@example.com", subject="c", headers="X-Tags: reset, other\r\n")
    c.send("dave@example.com", subject="d")
    c.wait_total(4)
    assert c.get("/api/v1/tags").json()["tags"] == {"signup": 1, "reset": 2}
    r = c.wait_total(2, tag="reset")
    assert sorted(m["Subject"] for m in r["messages"]) == ["b", "c"]
    assert c.get("/api/v1/message/latest", params={"tag": "signup"}).json()["Subject"] == "a"
    d = c.delete("/api/v1/messages", params={"tag": "reset"})
    assert d.status_code == 200 and d.json() == {"deleted": 2}
    c.wait_total(2)
    assert c.get("/api/v1/tags").json()["tags"] == {"signup": 1}


def test_wait_long_poll(catcher):
    c = catcher()
    c.send("early+t1@example.com", subject="already here")
    c.wait_total(1)
    t0 = time.monotonic()
    r = c.get("/api/v1/wait", params={"tag": "t1", "timeout": 5})
    assert r.status_code == 200 and r.json()["Subject"] == "already here"
    assert time.monotonic() - t0 < 2
    # new=1 ignores stored mail; a capture wakes the waiter long before the timeout
    result = {}

    def waiter():
        t = time.monotonic()
        result["r"] = c.get("/api/v1/wait", params={"query": "subject:wake", "new": "1",
                                                     "timeout": 20}, timeout=30)
        result["dt"] = time.monotonic() - t

    th = threading.Thread(target=waiter)
    th.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and c.get("/api/v1/info").json()["Waiters"] != 1:
        time.sleep(0.01)
    assert c.get("/api/v1/info").json()["Waiters"] == 1
    c.send("x@example.com", subject="please wake up")
    th.join(25)
    assert result["r"].status_code == 200, result["r"].text
    assert result["r"].json()["Subject"] == "please wake up"
    assert result["dt"] < 10
    t0 = time.monotonic()
    r = c.get("/api/v1/wait", params={"tag": "never", "timeout": 1})
    dt = time.monotonic() - t0
    assert r.status_code == 408 and 0.9 <= dt < 5, (r.status_code, dt)
    assert c.get("/api/v1/wait", params={"timeout": 301}).status_code == 400


def test_delete_and_cross_origin(catcher):
    c = catcher()
    for i in range(3):
        c.send("u%d@example.com" % i, subject="s%d" % i)
    ids = [m["ID"] for m in c.wait_total(3)["messages"]]
    assert c.delete("/api/v1/message/" + ids[0]).json() == {"deleted": 1}
    assert c.get("/api/v1/message/" + ids[0]).status_code == 404
    # a body must be JSON: an HTML form (text/plain or urlencoded) cannot delete
    r = c.delete("/api/v1/messages", data='{"IDs": ["%s"]}' % ids[1],
                 headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = c.delete("/api/v1/messages", json={"IDs": [ids[1]]})
    assert r.json() == {"deleted": 1}
    assert c.delete("/api/v1/messages", json={"ids": []}).status_code == 422
    c.wait_total(1)
    assert c.delete("/api/v1/messages").json() == {"deleted": 1}
    c.wait_total(0)
    # clearing everything closes the open segment, so no segment file is left
    assert _eventually_empty(os.path.join(c.store, "seg"))
    # the API is loopback-only by default and the HTTP verbs that write are not "simple"
    assert requests.post(c.base + "/api/v1/messages", timeout=5).status_code == 405


def _eventually_empty(d):
    deadline = time.monotonic() + 5
    while os.listdir(d) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not os.listdir(d)


def test_index_survives_restart_and_retention(catcher, tmp_path):
    store = str(tmp_path / "persist")
    c = catcher({"KUMO_SINK_MAX_MESSAGES": "3"}, store=store)
    for i in range(5):
        c.send("r%d@example.com" % i, subject="keep %d" % i)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # retention drops the oldest first
        r = c.get("/api/v1/messages").json()
        if [m["Subject"] for m in r["messages"]] == ["keep 4", "keep 3", "keep 2"]:
            break
        time.sleep(0.02)
    assert [m["Subject"] for m in r["messages"]] == ["keep 4", "keep 3", "keep 2"], r
    assert r["total"] == 3
    stop_kumod(c.k)
    c2 = catcher({"KUMO_SINK_MAX_MESSAGES": "3"}, store=store)
    r = c2.get("/api/v1/messages").json()
    assert [m["Subject"] for m in r["messages"]] == ["keep 4", "keep 3", "keep 2"], r
    m = c2.get("/api/v1/message/" + r["messages"][0]["ID"]).json()
    assert m["Text"].startswith("body")
    c2.send("r5@example.com", subject="keep 5")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = c2.get("/api/v1/messages").json()
        if r["messages"][0]["Subject"] == "keep 5" and r["total"] == 3:
            break
        time.sleep(0.02)
    assert [m["Subject"] for m in r["messages"]] == ["keep 5", "keep 4", "keep 3"], r


def _segments(store):
    return sorted(f for f in os.listdir(os.path.join(store, "seg")) if f.endswith(".seg"))


def test_segments_retention_restart_and_search(catcher, tmp_path):
    # 4 KiB segments hold 2-3 of these ~1.5 KiB messages: retention by count
    # empties the oldest segments, which are deleted from disk
    store = str(tmp_path / "segs")
    env = {"KUMO_SINK_MAX_MESSAGES": "4", "KUMO_SINK_SEGMENT_BYTES": "4096"}
    c = catcher(env, store=store)
    pad = ("x" * 100 + "\r\n") * 12
    for i in range(12):
        c.send("s%d@example.com" % i, subject="Seg %d" % i, body="body %d marker%d\r\n%s" % (i, i, pad))
    deadline = time.monotonic() + 10
    want = ["Seg 11", "Seg 10", "Seg 9", "Seg 8"]
    while time.monotonic() < deadline:
        r = c.get("/api/v1/messages").json()
        if [m["Subject"] for m in r["messages"]] == want:
            break
        time.sleep(0.02)
    assert [m["Subject"] for m in r["messages"]] == want, r
    # 12 messages need at least 4 segments; the oldest are gone once empty
    deadline = time.monotonic() + 5
    while len(_segments(store)) > 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    segs = _segments(store)
    assert 1 <= len(segs) <= 3, segs
    assert "00000001.seg" not in segs
    # search reads the precomputed text (case-insensitive): body, subject, to
    r = c.get("/api/v1/search", params={"query": "MARKER9"}).json()
    assert [m["Subject"] for m in r["messages"]] == ["Seg 9"], r
    r = c.get("/api/v1/search", params={"query": "subject:seg to:s1"}).json()
    assert [m["Subject"] for m in r["messages"]] == ["Seg 11", "Seg 10"], r
    # delete one, restart: the new format replays without it
    victim = [m for m in c.get("/api/v1/messages").json()["messages"] if m["Subject"] == "Seg 10"]
    assert c.delete("/api/v1/message/" + victim[0]["ID"]).json() == {"deleted": 1}
    c.wait_total(3)
    stop_kumod(c.k)
    c2 = catcher(env, store=store)
    r = c2.get("/api/v1/messages").json()
    assert [m["Subject"] for m in r["messages"]] == ["Seg 11", "Seg 9", "Seg 8"], r
    for m in r["messages"]:
        raw = c2.get("/api/v1/message/%s/raw" % m["ID"]).text
        n = m["Subject"].split()[1]
        assert "marker%s\r\n" % n in raw and raw.count("Subject: Seg %s\r\n" % n) == 1
    r = c2.get("/api/v1/search", params={"query": "marker8"}).json()
    assert r["messages_count"] == 1 and r["messages"][0]["Subject"] == "Seg 8"
    # new mail after the restart goes to a new segment and is retained
    c2.send("s12@example.com", subject="Seg 12")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = c2.get("/api/v1/messages").json()
        if r["messages"] and r["messages"][0]["Subject"] == "Seg 12":
            break
        time.sleep(0.02)
    assert [m["Subject"] for m in r["messages"]] == ["Seg 12", "Seg 11", "Seg 9", "Seg 8"], r
    # a torn last index line (a crash mid-append) is skipped at start
    stop_kumod(c2.k)
    with open(os.path.join(store, "index.v2"), "a") as f:
        f.write("A 0123456789abcdef0123456789abcdef 1 2 1 0 = 10 10\tabc")
    c3 = catcher(env, store=store)
    assert c3.get("/api/v1/messages").json()["total"] == 4
    # ... and cut off, so the next append starts a clean line
    c3.send("s13@example.com", subject="Seg 13")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = c3.get("/api/v1/messages").json()
        if r["messages"][0]["Subject"] == "Seg 13":
            break
        time.sleep(0.02)
    stop_kumod(c3.k)
    c4 = catcher(env, store=store)
    r = c4.get("/api/v1/messages").json()
    assert [m["Subject"] for m in r["messages"]] == ["Seg 13", "Seg 12", "Seg 11", "Seg 9"], r


def test_index_compacted_at_restart(catcher, tmp_path):
    # 70 messages with a cap of 2: 70 "A" and 68 "D" lines, so the restart
    # rewrites the index with the 2 live lines, which still point at their bytes
    store = str(tmp_path / "compact")
    env = {"KUMO_SINK_MAX_MESSAGES": "2", "KUMO_SINK_SEGMENT_BYTES": "8192"}
    c = catcher(env, store=store)
    for i in range(70):
        c.send("c%d@example.com" % i, subject="C %d" % i, body="cbody %d\r\n" % i)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = c.get("/api/v1/messages").json()
        if [m["Subject"] for m in r["messages"]] == ["C 69", "C 68"]:
            break
        time.sleep(0.02)
    assert [m["Subject"] for m in r["messages"]] == ["C 69", "C 68"], r
    stop_kumod(c.k)
    with open(os.path.join(store, "index.v2")) as f:
        assert len(f.readlines()) == 70 + 68
    c2 = catcher(env, store=store)
    with open(os.path.join(store, "index.v2")) as f:
        lines = f.readlines()
    assert [ln.split(" ")[0] for ln in lines] == ["A", "A"]
    r = c2.get("/api/v1/messages").json()
    assert [m["Subject"] for m in r["messages"]] == ["C 69", "C 68"], r
    for m in r["messages"]:
        n = m["Subject"].split()[1]
        assert "cbody %s\r\n" % n in c2.get("/api/v1/message/%s/raw" % m["ID"]).text
    r = c2.get("/api/v1/search", params={"query": "cbody 68"}).json()
    assert [m["Subject"] for m in r["messages"]] == ["C 68"], r


def test_catcher_off_and_misuse(catcher, tmp_path):
    k = spawn_kumod(tmp_path / "plain", policy_text="""
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.start_http_listener{ listen = '127.0.0.1:%d' }
  local ok, err = pcall(kumo.start_mail_catcher, { dir = '%s', max_mesages = 3 })
  kumo.log_info('bad key: ' .. tostring(err))
end)
""" % (free_port(), str(tmp_path / "x")), env={"KUMOD_LOG": "kumod=info,lua=info"},
                    wait="bad key: ")
    try:
        line = k.wait_for("bad key: ")
        assert "start_mail_catcher: unknown key 'max_mesages' (did you mean 'max_messages'?)" \
            in line, line
        port = k.listeners["http"][0][1]
        r = requests.get("http://127.0.0.1:%d/api/v1/messages" % port, timeout=5)
        assert r.status_code == 404 and "kumo.start_mail_catcher" in r.json()["error"]
    finally:
        stop_kumod(k)


def test_smtp_session_transcript(catcher):
    """Each captured message carries the conversation that delivered it, up to its DATA."""
    c = catcher()
    with smtplib.SMTP("127.0.0.1", c.smtp_port, local_hostname="client.example",
                      timeout=10) as s:
        s.ehlo()
        assert s.mail("alice@example.com")[0] == 250
        assert s.rcpt("nobody-permfail@example.com")[0] == 550  # magic: refused, recorded
        assert s.rcpt("bob@example.com")[0] == 250
        assert s.data(b"Subject: t\r\n\r\nx\r\n")[0] == 250
    mid = c.wait_total(1)["messages"][0]["ID"]
    assert "Session" not in c.get("/api/v1/messages").json()["messages"][0]  # list stays small
    sess = c.get("/api/v1/message/" + mid).json()["Session"]
    assert (sess["Ehlo"], sess["Tls"], sess["Dropped"]) == ("client.example", "", 0)
    lines = [(l["Dir"], l["Line"]) for l in sess["Lines"]]
    assert lines[0][0] == "S" and lines[0][1].startswith("220 ")
    assert lines[1] == ("C", "ehlo client.example")  # as smtplib sends it
    assert [l for l in lines[2:] if l[0] == "C"] == [
        ("C", "mail FROM:<alice@example.com>"), ("C", "rcpt TO:<nobody-permfail@example.com>"),
        ("C", "rcpt TO:<bob@example.com>"), ("C", "data")]
    assert ("S", "550 5.7.1 permfail requested") in lines
    assert lines[-1][0] == "S" and lines[-1][1].startswith("354 ")
    ms = [l["Ms"] for l in sess["Lines"]]
    assert ms == sorted(ms) and ms[-1] < 10000


SESSION_READER = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.start_esmtp_listener{ listen = '127.0.0.1:%(smtp)d', relay_hosts = { '127.0.0.1' } }
  kumo.start_mail_catcher{ dir = '%(store)s' }
  kumo.start_http_listener{ listen = '127.0.0.1:%(http)d' }
  kumo.configure_local_logs{ log_dir = '%(logs)s', meta = { 'smtp_session' },
                             max_segment_duration = '100ms' }
  kumo.define_spool{ name = 'data', path = '%(spool)s/data' }
  kumo.define_spool{ name = 'meta', path = '%(spool)s/meta' }
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1h',
    protocol = { smtp = { mx_list = { '127.0.0.1:%(dead)d' } } } }
end)
kumo.on('smtp_server_message_received', function(msg)
  if msg:recipient_list()[1].user == 'reader' then
    local s = msg:get_meta('smtp_session')
    msg:prepend_header('X-Lines-Seen', tostring(#s.Lines) .. ' ' .. s.Ehlo)
  end
  kumo.mail_catcher_capture(msg)
end)
"""


def test_smtp_session_is_the_same_however_it_is_read(tmp_path):
    """meta smtp_session is built only when read: by a policy (msg:get_meta), by a
    logger that lists it, or by the catcher's writer from its own copy; each reader
    sees the same conversation."""
    from test_relay import records, wait_until
    smtp, http = free_port(), free_port()
    logs = tmp_path / "logs"
    k = spawn_kumod(tmp_path / "k", SESSION_READER % {
        "smtp": smtp, "http": http, "store": tmp_path / "store", "logs": logs,
        "spool": tmp_path / "spool", "dead": free_port()},
        env={"KUMOD_LOG": "kumod=info,kumo_server_common=info"})
    try:
        c = Catcher(k, smtp, http, str(tmp_path / "store"))
        for rcpt in ("reader@example.com", "plain@example.com"):
            with smtplib.SMTP("127.0.0.1", smtp, local_hostname="client.example",
                              timeout=10) as s:
                s.sendmail("alice@example.com", [rcpt],
                           "To: <%s>\r\nSubject: %s\r\n\r\nx\r\n" % (rcpt, rcpt))
        msgs = c.wait_total(2)["messages"]
        sess = {}
        for m in msgs:
            full = c.get("/api/v1/message/" + m["ID"]).json()
            sess[full["To"][0]["Address"]] = (full["Session"], full["ID"])
        for rcpt, (s, _) in sess.items():
            assert s["Ehlo"] == "client.example", (rcpt, s)
            dirs = [(l["Dir"], l["Line"].split(" ")[0].lower()) for l in s["Lines"]]
            assert ("C", "mail") in dirs and ("C", "rcpt") in dirs and dirs[-1][0] == "S", dirs
        # the policy's read saw what the catcher stored
        reader, rid = sess["reader@example.com"]
        raw = c.get("/api/v1/message/%s/raw" % rid).text
        assert "X-Lines-Seen: %d client.example" % len(reader["Lines"]) in raw.splitlines()
        # the logger built it for the message no policy read
        plain, pid = sess["plain@example.com"]
        recs = wait_until(lambda: [r for r in records(logs)
                                   if r["type"] == "Reception" and r["id"] == pid], timeout=10)
        assert recs and recs[0]["meta"]["smtp_session"] == plain, recs
    finally:
        stop_kumod(k)


def smtp_try(port, sender, rcpts, helo="client.test", data=b"Subject: f\r\n\r\nx\r\n"):
    """One transaction; returns the first non-2xx/3xx (code, text) or (250, ...) of DATA."""
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=10) as s:
            code, text = s.ehlo()
            if code != 250:
                return code, text.decode()
            code, text = s.mail(sender)
            if code != 250:
                return code, text.decode()
            for r in rcpts:
                code, text = s.rcpt(r)
                if code != 250:
                    return code, text.decode()
            code, text = s.data(data)
            return code, text.decode()
    except smtplib.SMTPConnectError as e:
        return e.smtp_code, e.smtp_error.decode()
    except smtplib.SMTPServerDisconnected as e:
        return 0, str(e)


def test_fault_plan_from_env_first_n(catcher):
    plan = {"rules": [{"stage": "rcpt", "match": {"rcpt": "bob@example.com"}, "first": 2,
                       "code": 451, "text": "4.7.0 try again"}]}
    import json
    c = catcher({"KUMO_SINK_FAULTS": json.dumps(plan)})
    assert "faults=KUMO_SINK_FAULTS" in c.k.wait_for("sink settings: ")
    got = [smtp_try(c.smtp_port, "a@example.com", ["bob@example.com"])[0] for _ in range(3)]
    assert got == [451, 451, 250]
    assert smtp_try(c.smtp_port, "a@example.com", ["carol@example.com"])[0] == 250
    assert smtp_try(c.smtp_port, "a@example.com", ["bob@example.com"])[0] == 250


def test_fault_plan_runtime_api(catcher):
    c = catcher()
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"])[0] == 250
    r = requests.put(c.base + "/api/v1/faults", timeout=5,
                     json={"rules": [{"stage": "mail", "preset": "server-busy"}]})
    assert r.status_code == 200 and r.json()["plan"]["rules"][0]["code"] == 451
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"]) == \
        (451, "4.7.500 Server busy, please try again later")
    assert c.delete("/api/v1/faults").json() == {"version": 2, "plan": None}
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"])[0] == 250
    # refused plans name the problem and leave the current plan alone
    for bad, why in [({"rules": [{"stage": "data", "hang": "yes"}]}, "'hang' true"),
                     ({"rules": [{"stage": "rcpt", "delay": "5s"}]}, "'delay' is milliseconds"),
                     ({"rules": [{"stage": "helo", "code": 451}]}, "'stage' must be"),
                     ({"rules": [{"stage": "rcpt", "code": 250}]}, "'code' must be 400-599"),
                     ({"rules": [{"stage": "rcpt"}]}, "'code' (400-599), 'preset', 'disconnect'"),
                     ({"rules": [{"stage": "rcpt", "preset": "nope"}]}, "unknown 'preset'"),
                     ({"rulez": []}, "unknown key rulez")]:
        r = requests.put(c.base + "/api/v1/faults", json=bad, timeout=5)
        assert r.status_code == 422 and why in r.json()["error"], (bad, r.text)
    r = requests.put(c.base + "/api/v1/faults", data="{}", timeout=5,
                     headers={"Content-Type": "text/plain"})
    assert r.status_code == 415  # no cross-site form can switch faults
    assert c.get("/api/v1/faults").json()["plan"] is None


def test_fault_plan_stages_rate_window(catcher):
    c = catcher()
    plan = {"rules": [
        {"stage": "ehlo", "match": {"domain": "bad.client"}, "code": 550, "text": "5.7.1 go away"},
        {"stage": "data", "match": {"domain": "d.test"}, "code": 554, "text": "5.7.1 no data"},
        {"stage": "rcpt", "match": {"domain": "rate.test"}, "rate": "3/min", "preset": "rate-limit"},
    ]}
    assert requests.put(c.base + "/api/v1/faults", json=plan, timeout=5).status_code == 200
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"], helo="bad.client") == \
        (550, "5.7.1 go away")
    assert smtp_try(c.smtp_port, "a@example.com", ["x@d.test"]) == (554, "5.7.1 no data")
    got = [smtp_try(c.smtp_port, "a@example.com", ["u%d@rate.test" % i])[0] for i in range(5)]
    assert got == [250, 250, 250, 421, 421], got  # a provider-style throttle, per client
    # a time window: the first second after the plan is set, connections get 421
    win = {"rules": [{"stage": "connect", "code": 421, "text": "4.3.2 down for maintenance",
                      "window": [0, 1]}]}
    assert requests.put(c.base + "/api/v1/faults", json=win, timeout=5).status_code == 200
    t0 = time.monotonic()
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"]) == \
        (421, "4.3.2 down for maintenance")
    while time.monotonic() - t0 < 1.2:
        time.sleep(0.05)
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"])[0] == 250


def test_fault_plan_invalid_env_fails_closed(tmp_path):
    import subprocess
    import conftest
    env = conftest.kumod_env({"KUMO_SINK_PORT": str(free_port()),
                              "KUMO_SINK_FAULTS": '{"rules": [{"stage": "data", "hang": 1}]}'})
    r = subprocess.run([conftest.KUMOD_BIN, "--policy", SINK], env=env, cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "mail_catcher_set_faults: rules[0]: 'delay' is milliseconds 0..600000, 'hang' true" \
        in r.stderr, r.stderr


def test_fault_plan_delay_and_hang(catcher):
    """smtplib times the replies: a delayed 250, a delayed 451, and a hang (no reply)."""
    import socket
    c = catcher()
    plan = {"rules": [
        {"stage": "mail", "match": {"sender": "slow@example.com"}, "delay": 800},
        {"stage": "rcpt", "match": {"rcpt": "late@example.com"}, "delay": 600, "preset": "greylist"},
        {"stage": "ehlo", "match": {"domain": "stuck.client"}, "hang": True},
    ]}
    assert requests.put(c.base + "/api/v1/faults", json=plan, timeout=5).status_code == 200
    with smtplib.SMTP("127.0.0.1", c.smtp_port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        t0 = time.monotonic()
        assert s.mail("slow@example.com")[0] == 250
        dt = time.monotonic() - t0
        assert 0.75 <= dt < 5, dt
        t0 = time.monotonic()
        assert s.rcpt("late@example.com") == (451, b"4.7.1 Greylisted, please try again later")
        dt = time.monotonic() - t0
        assert 0.55 <= dt < 5, dt
        t0 = time.monotonic()
        assert s.rcpt("fast@example.com")[0] == 250
        assert time.monotonic() - t0 < 0.5
    with socket.create_connection(("127.0.0.1", c.smtp_port), timeout=5) as sk:
        f = sk.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sk.sendall(b"EHLO stuck.client\r\n")
        sk.settimeout(1.5)
        t0 = time.monotonic()
        with pytest.raises((socket.timeout, TimeoutError)):
            f.readline()  # never answered
        assert time.monotonic() - t0 >= 1.4
    # the sink itself is not held up by the hanging session
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"])[0] == 250


def test_validate_mode_with_catcher(tmp_path):
    """kumod --validate runs the sink's handlers with the catcher on, without opening a store."""
    import subprocess
    import conftest
    env = conftest.kumod_env({"KUMO_SINK_HTTP": "127.0.0.1:%d" % free_port(),
                              "KUMO_SINK_STORE": str(tmp_path / "store"),
                              "KUMO_SINK_FAULTS": '{"rules": [{"stage": "mail", "delay": 10}]}'})
    r = subprocess.run([conftest.KUMOD_BIN, "--validate", "--policy", SINK], env=env,
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "is valid" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "store").exists()
