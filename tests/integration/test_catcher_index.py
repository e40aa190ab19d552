# SPDX-License-Identifier: Apache-2.0
"""The catcher's index lines are written by its own JSON writer on the writer's thread:
every kind of character a summary can hold comes back unchanged, through the API, a
waiter and a restart (the index replayed)."""

import threading

from smtpraw import stop_kumod
from test_catcher import catcher  # noqa: F401 (a fixture)

# quotes, backslashes, a tab, controls (encoded words may carry them), UTF-8 in 2-4 bytes
SUBJECT_RAW = '=?utf-8?Q?q=22=5C=09t=01=1F=7F_=C3=A9=E2=82=AC=F0=9F=98=80?= "x" \\ y'
SUBJECT = 'q"\\\tt\x01\x1f\x7f é€😀 "x" \\ y'


def test_index_line_escaping_waiter_and_restart(catcher, tmp_path):
    store = str(tmp_path / "store")
    c = catcher(store=store)
    got = {}

    def waiter():
        got["r"] = c.get("/api/v1/wait",
                         params={"query": "subject:y", "timeout": "20", "new": "1"}, timeout=30)

    t = threading.Thread(target=waiter)
    t.start()
    sent = 0
    while t.is_alive() and sent < 50:  # until the waiter (new mail only) has seen one
        c.send('"Zoë \\"Q\\"" <zoe@example.com>', subject=SUBJECT_RAW,
               body="caf\u00e9 \\ \"b\"\r\n")
        sent += 1
        t.join(0.2)
    t.join(35)
    assert got["r"].status_code == 200, got["r"].text
    assert got["r"].json()["Subject"] == SUBJECT
    r = c.wait_total(sent)
    s = r["messages"][0]
    assert s["Subject"] == SUBJECT
    assert s["To"] == [{"Name": 'Zoë "Q"', "Address": "zoe@example.com"}]
    first = c.get("/api/v1/message/" + s["ID"]).json()
    assert first["Subject"] == SUBJECT
    stop_kumod(c.k)
    c2 = catcher(store=store)
    r2 = c2.wait_total(sent)
    assert r2["messages"] == r["messages"] and r2["total"] == sent
    again = c2.get("/api/v1/message/" + s["ID"]).json()
    assert again == first
