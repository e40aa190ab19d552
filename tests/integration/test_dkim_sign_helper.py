# SPDX-License-Identifier: Apache-2.0
"""policy-extras.dkim_sign: dkim_data.toml (base, domain blocks matched on
the From header's domain, additional signatures with their policies) signs
through a real relay; an independent verifier (python3-dkim) checks every
signature of the delivered messages."""

import smtplib

import pytest

from test_dkim import make_keys
from test_relay import captured, relay_start, sink_start, wait_until

dkim = pytest.importorskip("dkim")

DATA = """
[base]
selector = "rsa"
headers = [ "From", "To", "Subject" ]
additional_signatures = [ "esp", "fallback" ]

[domain."example.com"]
filename = "{rsa}"

[domain."*.wild.example"]
filename = "{rsa}"

[signature."esp"]
domain = "esp.example"
selector = "ed"
algo = "ed25519"
filename = "{ed}"
policy = "Always"

[signature."fallback"]
domain = "fallback.example"
filename = "{rsa}"
policy = "OnlyIfMissingDomainBlock"
"""

POLICY = """
local sign = require('policy-extras.dkim_sign'):setup {{ '{data}' }}
kumo.on('smtp_server_message_received', function(msg)
  sign(msg)
end)
"""


def records(rsa, ed):
    import base64
    import subprocess
    rsa_pub = subprocess.run(["openssl", "pkey", "-in", str(rsa), "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
    ed_pub = subprocess.run(["openssl", "pkey", "-in", str(ed), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout[-32:]
    rsa_txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_pub)
    return {
        b"rsa._domainkey.example.com.": rsa_txt,
        b"rsa._domainkey.a.wild.example.": rsa_txt,
        b"rsa._domainkey.fallback.example.": rsa_txt,
        b"ed._domainkey.esp.example.": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_pub),
    }


def signing_domains(raw, recs):
    """d= of every DKIM-Signature, each verified independently."""
    def dnsfunc(name, timeout=5):
        return recs.get(name if name.endswith(b".") else name + b".")
    d = dkim.DKIM(raw)
    count = raw.split(b"\r\n\r\n", 1)[0].count(b"\r\nDKIM-Signature:") + \
        raw.startswith(b"DKIM-Signature:")
    domains = []
    for i in range(count):
        assert d.verify(idx=i, dnsfunc=dnsfunc), (i, raw[:800])
        domains.append(d.domain.decode())
    return sorted(domains)


def test_dkim_sign_helper(kumod, tmp_path):
    rsa, ed = make_keys(tmp_path)
    data = tmp_path / "dkim_data.toml"
    data.write_text(DATA.format(rsa=rsa, ed=ed))
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay = relay_start(kumod, tmp_path / "var", ["127.0.0.1:%d" % sink.smtp_port],
                        extra=POLICY.format(data=data))
    cases = {
        "a@example.com": ["esp.example", "example.com"],
        "b@a.wild.example": ["esp.example", "wild.example"],
        "c@other.example": ["esp.example", "fallback.example"],
    }
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as s:
        for i, sender in enumerate(cases):
            msg = ("From: Someone <%s>\r\nTo: <r%d@example.net>\r\nSubject: helper %d\r\n\r\n"
                   "body %d\r\n" % (sender, i, i, i)).encode()
            s.sendmail(sender, ["r%d@example.net" % i], msg)
        # no From header: refused, nothing sent unsigned
        s.mail("x@example.com")
        s.rcpt("r9@example.net")
        code, text = s.data(b"Subject: no from\r\n\r\nbody\r\n")
        assert code == 552 and text.decode().startswith("5.6.0 DKIM signing requires a From"), text
    files = wait_until(lambda: len(captured(capture)) >= 3 and captured(capture))
    assert files and len(files) == 3, relay.stderr()
    recs = records(rsa, ed)
    got = {}
    for f in files:
        raw = open(f, "rb").read()
        sender = raw.split(b"From: Someone <", 1)[1].split(b">", 1)[0].decode()
        got[sender] = signing_domains(raw, recs)
    # the wildcard block signs with the From domain itself
    cases["b@a.wild.example"] = ["a.wild.example", "esp.example"]
    assert got == cases
    assert relay.stop() == 0


def test_dkim_sign_helper_refuses_bad_data(tmp_path):
    from conftest import run_kumod
    data = tmp_path / "dkim_data.toml"
    data.write_text('[base]\nselector = "s"\nvault_mount = "secret"\n')
    (tmp_path / "policy.lua").write_text(
        "local sign = require('policy-extras.dkim_sign'):setup { '%s' }\n" % data)
    out = run_kumod(["--validate", "--policy", "policy.lua"], cwd=str(tmp_path))
    assert out.returncode == 1
    assert "vault_mount: keys from HashiCorp Vault are a KumoMTA feature kumod does not " \
        "implement yet" in out.stderr, out.stderr
