# SPDX-License-Identifier: Apache-2.0
"""kumo.make_throttle (node-local GCRA): the assertions run inside a real
kumod's handler on `--validate`'s sample arguments; a failed one is a
validate error line naming it. A live session checks reception
throttling with kumo.reject."""

import smtplib

from test_policy_errors import validate_clean

POLICY = r"""
kumo.on('smtp_server_mail_from', function(sender)
  local n, throttled = 0, 0
  for i = 1, 10 do
    local r = kumo.make_throttle('t-' .. sender.email, '5/minute'):throttle()
    if r.throttled then throttled = throttled + 1 else n = n + 1 end
  end
  assert(n == 5 and throttled == 5, n)
  local r = kumo.make_throttle('t-' .. sender.email, '5/minute'):throttle()
  assert(r.throttled and r.retry_after.secs >= 11 and r.retry_after.secs <= 12, r.retry_after.secs)
  assert(r.limit == 5 and r.remaining == 0)
  local b = kumo.make_throttle('burst', '60/minute,max_burst=1')
  local first = b:throttle()
  assert(not first.throttled and first.retry_after == nil and first.remaining == 0, first.remaining)
  assert(b:throttle().throttled)
  local big = kumo.make_throttle('big', '1,000/hr')
  local x = big:throttle()
  assert(x.remaining == 999, x.remaining)
  assert(not pcall(kumo.make_throttle, 'x', '10 per second'))
  local ok, e = pcall(b.sleep_if_throttled, b)
  assert(not ok and e:find('throttle:sleep_if_throttled() is a KumoMTA method that kumod does not implement yet', 1, true), e)
  kumo.log_info('THROTTLE-DONE ' .. b:explain())
end)
"""


def test_make_throttle(tmp_path):
    line = validate_clean(tmp_path, POLICY, "THROTTLE-DONE")
    assert line.endswith(
        "THROTTLE-DONE throttle 'burst': 60 per 60000 ms, max_burst 1 (node-local GCRA)"), line


def test_reception_throttle_rejects_past_the_rate(kumod):
    k = kumod("""
kumo.on('init', function() kumo.start_esmtp_listener{ listen = '127.0.0.1:0' } end)
kumo.on('smtp_server_mail_from', function(sender)
  local r = kumo.make_throttle('reception-' .. sender.email, '3/hour'):throttle()
  if r.throttled then kumo.reject(451, '4.4.5 sender rate exceeded, retry in ' .. r.retry_after.secs .. 's') end
end)
""")
    codes = []
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        for _ in range(5):
            code, text = s.docmd("MAIL", "FROM:<a@example.com>")
            codes.append(code)
            s.rset()
        # another sender has its own cell
        code, _ = s.docmd("MAIL", "FROM:<b@example.com>")
        codes.append(code)
    assert codes == [250, 250, 250, 451, 451, 250], codes
    assert k.stop() == 0
