# SPDX-License-Identifier: Apache-2.0
"""trace_headers{ include_meta_names }: the supplemental header (X-KumoRef)
carries KumoMTA's marker, the recipient and the listed meta values the
policy set in smtp_server_message_received."""

import base64
import email
import json
import re
import smtplib

from test_relay import captured, sink_start, wait_until

POLICY = """
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' },
    trace_headers = { include_meta_names = { 'tenant', 'campaign', 'absent' } } }
end)
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('tenant', 'acme')
  msg:set_meta('campaign', { id = 7 })
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ protocol = { smtp = { mx_list = { '127.0.0.1:%(port)d' } } } }
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path{ prohibited_hosts = {}, enable_tls = 'Disabled' }
end)
"""


def kumo_refs(data):
    """Every X-KumoRef value of a message, unfolded and decoded."""
    msg = email.message_from_bytes(data)
    return [json.loads(base64.b64decode(re.sub(r"\s+", "", v)))
            for v in msg.get_all("X-KumoRef", [])]


def test_include_meta_names(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    k = kumod(POLICY % {"var": tmp_path / "var", "port": sink.smtp_port})
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.sendmail("a@example.com", ["b@example.net"], b"Subject: meta\r\n\r\nbody\r\n")
    files = wait_until(lambda: captured(capture), timeout=15)
    assert len(files) == 1, k.stderr()
    refs = kumo_refs(open(files[0], "rb").read())
    # ours (from the relay) and the sink's own, which lists no meta
    assert {"_@_": "\\_/", "recipient": "b@example.net", "tenant": "acme",
            "campaign": {"id": 7}} in refs, refs
    assert k.stop() == 0
