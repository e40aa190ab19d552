# SPDX-License-Identifier: Apache-2.0
"""DKIM signing (kumo.dkim, msg:dkim_sign) checked by independent
verifiers: Debian's python3-dkim (dkimpy) and OpenDKIM (`opendkim -t` with
TestPublicKeys) verify what a relaying kumod signed in
smtp_server_message_received and a sink captured, with the public keys
handed over without DNS. Relaxed/simple x RSA-2048/Ed25519, folded
headers, 8-bit and empty bodies, over-signing; bad parameters and keys fail
naming the problem."""

import base64
import os
import smtplib
import subprocess
import time

import pytest

from test_relay import captured, relay_start, sink_start, wait_until

dkim = pytest.importorskip("dkim")

SIGN_POLICY = """
local RSA = [==[{rsa_key}]==]
kumo.on('smtp_server_message_received', function(msg)
  local v = msg:get_first_named_header_value('X-Variant')
  local alg, hc, bc, over = v:match('^(%w+)/(%w+)/(%w+)/(%w+)$')
  local params = {{
    domain = 'example.com', selector = alg == 'ed' and 'ed' or 'rsa',
    headers = {{ 'From', 'To', 'Subject', 'X-Variant', 'X-Folded' }},
    header_canonicalization = hc, body_canonicalization = bc,
    over_sign = over == 'over', expiration = 3600,
  }}
  if alg == 'ed' then
    params.key = '{ed_path}'
    msg:dkim_sign(kumo.dkim.ed25519_signer(params))
  else
    params.key = {{ key_data = RSA }}
    msg:dkim_sign(kumo.dkim.rsa_sha256_signer(params))
  end
end)
"""


def make_keys(tmp_path):
    rsa = tmp_path / "rsa.pem"
    ed = tmp_path / "ed.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(rsa)], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)],
                   check=True, capture_output=True)
    return rsa, ed


def dns_records(rsa, ed):
    """selector._domainkey.example.com TXT records for the two keys."""
    rsa_pub = subprocess.run(["openssl", "pkey", "-in", str(rsa), "-pubout", "-outform",
                              "DER"], check=True, capture_output=True).stdout
    ed_pub = subprocess.run(["openssl", "pkey", "-in", str(ed), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout[-32:]
    return {
        b"rsa._domainkey.example.com.":
            b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_pub),
        b"ed._domainkey.example.com.":
            b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_pub),
    }


OPENDKIM = "/usr/sbin/opendkim"


def opendkim_verify(path, records, tmp_path):
    """OpenDKIM's own verdict on the message file: (s, d) of the signature
    it verified, or None when it did not succeed."""
    keys = tmp_path / "opendkim.keys"
    if not keys.exists():
        keys.write_bytes(b"".join(k.rstrip(b".") + b" " + v + b"\n"
                                  for k, v in records.items()))
        (tmp_path / "opendkim.conf").write_text("Mode v\nTestPublicKeys %s\nSyslog no\n"
                                                % keys)
    r = subprocess.run([OPENDKIM, "-x", str(tmp_path / "opendkim.conf"), "-t", str(path)],
                       capture_output=True, text=True, timeout=20)
    # "opendkim: <file>: verification (s=rsa, d=example.com, 2048-bit key) succeeded"
    verdict = r.stdout.strip().rsplit(": ", 1)[-1]
    if r.returncode != 0 or not verdict.startswith("verification (") \
            or not verdict.endswith(") succeeded"):
        return None
    tags = dict(t.strip().split("=", 1) for t in verdict[len("verification ("):].split(",")
                if "=" in t)
    return tags["s"], tags["d"]


def verify(raw, records):
    def dnsfunc(name, timeout=5):
        return records.get(name if name.endswith(b".") else name + b".")
    return dkim.verify(raw, dnsfunc=dnsfunc)


def signature_tags(raw):
    """The tags of the first DKIM-Signature field of raw (bytes); the sink
    puts its Received fields above it."""
    lines = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(b"DKIM-Signature:")]
    assert len(starts) == 1, lines[:5]
    field = lines[starts[0]]
    for line in lines[starts[0] + 1:]:
        if line[:1] not in (b" ", b"\t"):
            break
        field += line
    value = field.split(b":", 1)[1]
    tags = {}
    for part in value.split(b";"):
        part = b"".join(part.split())
        if part:
            k, v = part.split(b"=", 1)
            tags[k.decode()] = v.decode()
    return tags


BODIES = {
    "plain": b"Hello,\r\n\r\nA  body   with  runs of spaces \t \r\nand trailing blank lines\r\n\r\n\r\n",
    "8bit": "Grüße aus Köln — ✓ ünïcödé\r\n\tindented\r\n".encode("utf-8"),
    "empty": b"",
}

VARIANTS = [(alg, hc, bc, over)
            for alg in ("rsa", "ed")
            for hc in ("Relaxed", "Simple")
            for bc in ("Relaxed", "Simple")
            for over in ("over", "plain")]


def message(variant, body):
    alg, hc, bc, over = variant
    head = ("From: Sender <sender@example.com>\r\n"
            "To: rcpt@example.net\r\n"
            "Subject: DKIM  test\t%s/%s/%s/%s\r\n"
            "X-Folded: a header value that is long enough to be folded\r\n"
            " \tacross  several   lines\r\n"
            "\tby the sender   \r\n"
            "X-Variant: %s/%s/%s/%s\r\n"
            "Message-ID: <m@example.com>\r\n"
            "\r\n") % (variant + variant)
    return head.encode("ascii") + body


def test_signatures_verify_independently(kumod, tmp_path):
    rsa, ed = make_keys(tmp_path)
    records = dns_records(rsa, ed)
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    extra = SIGN_POLICY.format(rsa_key=rsa.read_text(), ed_path=str(ed))
    relay = relay_start(kumod, tmp_path / "var", ["127.0.0.1:%d" % sink.smtp_port],
                        extra=extra)
    sent = {}
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as s:
        for variant in VARIANTS:
            for name, body in BODIES.items():
                raw = message(variant, body)
                rcpt = "%s-%s-%s-%s-%s@example.com" % (variant + (name,))
                s.sendmail("sender@example.com", [rcpt], raw)
                sent[rcpt.lower()] = (variant, name, raw)
    files = wait_until(lambda: len(captured(capture)) >= len(sent) and captured(capture))
    assert files and len(files) == len(sent), relay.stderr()
    seen = set()
    for f in files:
        raw = open(f, "rb").read()
        tags = signature_tags(raw)
        variant = tuple(raw.split(b"X-Variant: ", 1)[1].split(b"\r\n", 1)[0].decode()
                        .split("/"))
        alg, hc, bc, over = variant
        assert tags["a"] == ("ed25519-sha256" if alg == "ed" else "rsa-sha256")
        assert tags["c"] == "%s/%s" % (hc.lower(), bc.lower())
        assert tags["d"] == "example.com" and tags["v"] == "1"
        assert int(tags["x"]) == int(tags["t"]) + 3600
        if over == "over":
            # each distinct name, sorted, once more than the message has it
            assert tags["h"] == "from:from:subject:subject:to:to:x-folded:x-folded:" \
                "x-variant:x-variant", tags["h"]
        else:
            assert tags["h"] == "from:to:subject:x-variant:x-folded", tags["h"]
        assert verify(raw, records), (variant, f, raw[:600])
        # tampering breaks it: the verifier is really checking
        tampered = raw.replace(b"Subject: DKIM", b"Subject: DKIX", 1)
        assert not verify(tampered, records)
        if os.path.exists(OPENDKIM):
            assert opendkim_verify(f, records, tmp_path) == (alg, "example.com"), variant
            bad = tmp_path / "tampered.eml"
            bad.write_bytes(tampered)
            assert opendkim_verify(bad, records, tmp_path) is None
        seen.add(raw.split(b"\r\n\r\n", 1)[1])
    assert len(seen) == len(BODIES)


def test_over_signing_refuses_an_added_header(kumod, tmp_path):
    """A second Subject added in transit fails an over-signed signature but
    not a plain one (RFC 6376 8.15)."""
    rsa, ed = make_keys(tmp_path)
    records = dns_records(rsa, ed)
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay = relay_start(kumod, tmp_path / "var", ["127.0.0.1:%d" % sink.smtp_port],
                        extra=SIGN_POLICY.format(rsa_key=rsa.read_text(), ed_path=str(ed)))
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as s:
        for over in ("over", "plain"):
            s.sendmail("sender@example.com", ["%s@example.com" % over],
                       message(("rsa", "Relaxed", "Relaxed", over), b"body\r\n"))
    files = wait_until(lambda: len(captured(capture)) >= 2 and captured(capture))
    assert files and len(files) == 2
    for f in files:
        raw = open(f, "rb").read()
        assert verify(raw, records)
        over = b"X-Variant: rsa/Relaxed/Relaxed/over" in raw
        # on top: the verifier takes the bottom-most field for a name listed
        # once, so only the over-signed h= (subject listed twice) sees it
        forged = b"Subject: forged\r\n" + raw
        assert verify(forged, records) == (not over)


def validate(kumod_bin, tmp_path, body, key_file=None):
    policy = tmp_path / "bad.lua"
    policy.write_text("local kumo = require 'kumo'\n" + body)
    return subprocess.run([kumod_bin, "--policy", str(policy), "--validate"],
                          capture_output=True, text=True, timeout=20, cwd=str(tmp_path))


BASE = ("domain = 'example.com', selector = 's', headers = { 'From' }, "
        "key = '%s'")


@pytest.mark.parametrize("params,expect", [
    ("atag = 1", "unknown key 'atag'"),
    ("atps = 'x.example'", "atps is not supported"),
    ("reporting = true", "reporting is not supported"),
    ("header_canonicalization = 'relaxed'", "expected 'Relaxed' or 'Simple'"),
    ("expiration = -5", "expiration: expected a positive number of seconds"),
    ("ttl = 'soon'", "ttl: 'soon' is not a duration"),
])
def test_bad_parameters_name_the_key(tmp_path, params, expect):
    from conftest import KUMOD_BIN
    rsa, _ = make_keys(tmp_path)
    r = validate(KUMOD_BIN, tmp_path,
                 "kumo.dkim.rsa_sha256_signer{ %s, %s }\n" % (BASE % rsa, params))
    assert r.returncode != 0
    assert expect in r.stderr + r.stdout, r.stderr + r.stdout


@pytest.mark.parametrize("case,expect", [
    ("headers", "headers must include From"),
    ("missing", "No such file or directory"),
    ("garbage", "not a PEM or DER private key"),
    ("wrongtype", "the key is an Ed25519 key; use kumo.dkim.ed25519_signer"),
    ("short", "too short"),
    ("vault", "kumo.dkim.rsa_sha256_signer: key: HashiCorp Vault key sources (vault_"),
    ("nodomain", "domain is required"),
])
def test_bad_keys_and_headers_are_clear_errors(tmp_path, case, expect):
    from conftest import KUMOD_BIN
    rsa, ed = make_keys(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n"
                       "-----END PRIVATE KEY-----\n")
    short = tmp_path / "short.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:512", "-out", str(short)], check=True,
                   capture_output=True)
    p = {
        "headers": "domain = 'example.com', selector = 's', headers = { 'To' }, key = '%s'"
                   % rsa,
        "missing": BASE % (tmp_path / "nope.pem"),
        "garbage": BASE % garbage,
        "wrongtype": BASE % ed,
        "short": BASE % short,
        "vault": "domain = 'example.com', selector = 's', headers = { 'From' }, "
                 "key = { vault_mount = 'secret', vault_path = 'dkim' }",
        "nodomain": "selector = 's', headers = { 'From' }, key = '%s'" % rsa,
    }[case]
    r = validate(KUMOD_BIN, tmp_path, "kumo.dkim.rsa_sha256_signer{ %s }\n" % p)
    assert r.returncode != 0
    assert expect in r.stderr + r.stdout, r.stderr + r.stdout


KEYFILE_POLICY = """
kumo.on('smtp_server_message_received', function(msg)
  msg:dkim_sign(kumo.dkim.rsa_sha256_signer{{
    domain = 'example.com', selector = 'rsa', headers = {{ 'From', 'Subject' }},
    key = '{path}', ttl = {ttl},
  }})
end)
"""


def test_signer_built_per_message_reads_the_key_once(kumod, tmp_path):
    """The key file is read for the first message only: removed afterwards,
    the next messages are still signed (from the cache) and verify."""
    rsa, ed = make_keys(tmp_path)
    records = dns_records(rsa, ed)
    key = tmp_path / "cached.pem"
    key.write_bytes(rsa.read_bytes())
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay = relay_start(kumod, tmp_path / "var", ["127.0.0.1:%d" % sink.smtp_port],
                        extra=KEYFILE_POLICY.format(path=key, ttl=300))
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as s:
        s.sendmail("sender@example.com", ["first@example.com"],
                   message(("rsa", "Relaxed", "Relaxed", "plain"), b"first\r\n"))
        key.unlink()
        for i in range(5):
            s.sendmail("sender@example.com", ["later%d@example.com" % i],
                       message(("rsa", "Relaxed", "Relaxed", "plain"), b"later\r\n"))
    files = wait_until(lambda: len(captured(capture)) >= 6 and captured(capture))
    assert files and len(files) == 6, relay.stderr()
    for f in files:
        assert verify(open(f, "rb").read(), records)


def test_unusable_key_refuses_the_message(kumod, tmp_path):
    """A signer that cannot be built refuses the message (451 4.3.0): it is
    never relayed unsigned."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay = relay_start(kumod, tmp_path / "var", ["127.0.0.1:%d" % sink.smtp_port],
                        extra=KEYFILE_POLICY.format(path=tmp_path / "absent.pem", ttl=300))
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as s:
        s.ehlo()
        s.mail("sender@example.com")
        s.rcpt("rcpt@example.com")
        code, text = s.data(message(("rsa", "Relaxed", "Relaxed", "plain"), b"x\r\n"))
    assert code == 451, (code, text)
    assert text.startswith(b"4.3.0"), text
    time.sleep(0.5)
    assert captured(capture) == []


def test_trace_event_per_signature(kumod, tmp_path):
    """Each signature emits the dkim_sign event (kumod::dkim, DEBUG) with
    the message id, d=, s=, the algorithm and the sizes."""
    from test_relay import RELAY_POLICY
    rsa, ed = make_keys(tmp_path)
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    text = RELAY_POLICY.format(var=tmp_path / "var", mx_list="'127.0.0.1:%d'" % sink.smtp_port,
                               retry="1s", max_age="1h", flush="true")
    text += SIGN_POLICY.format(rsa_key=rsa.read_text(), ed_path=str(ed))
    relay = kumod(text, env={"KUMOD_LOG": "info,kumod::dkim=debug"},
                  policy_name="relay.lua")
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as s:
        s.sendmail("sender@example.com", ["t@example.com"],
                   message(("ed", "Relaxed", "Simple", "plain"), b"traced\r\n"))
    files = wait_until(lambda: captured(capture))
    assert files and len(files) == 1
    line = relay.wait_for("kumod::dkim")
    fields = dict(kv.split("=", 1) for kv in line.split("kumod::dkim", 1)[1].split()
                  if "=" in kv)
    assert fields["d"] == "example.com" and fields["s"] == "ed", line
    assert fields["a"] == "ed25519-sha256", line
    assert len(fields["id"]) == 32 and int(fields["id"], 16) >= 0, line
    assert int(fields["bytes"]) > 0 and int(fields["sign_ns"]) > 0, line


def test_set_signing_threads_is_accepted(tmp_path):
    """KumoMTA policies call it in pre_init: accepted (no effect), a bad
    count refused."""
    from conftest import KUMOD_BIN
    ok = validate(KUMOD_BIN, tmp_path,
                  "kumo.on('pre_init', function() kumo.dkim.set_signing_threads(4) end)\n")
    assert ok.returncode == 0, ok.stderr
    bad = validate(KUMOD_BIN, tmp_path,
                   "kumo.on('pre_init', function() kumo.dkim.set_signing_threads(0) end)\n")
    assert bad.returncode != 0
    assert "set_signing_threads: expected a thread count of at least 1" in bad.stderr, \
        bad.stderr
