# SPDX-License-Identifier: Apache-2.0
"""Message methods a KumoMTA policy uses (envelope setters, queue_name,
attempt counters, header listing): each assertion runs inside a real kumod's
smtp_server_message_received handler on `--validate`'s sample message, and a
failed assertion is a validate error line naming it."""

from test_policy_errors import validate_clean

POLICY = r"""
kumo.on('smtp_server_message_received', function(msg)
  msg:set_sender('new.sender@Example.org')
  assert(msg:sender().email == 'new.sender@example.org', tostring(msg:sender()))
  msg:set_recipient({ 'a@x.example', msg:recipient() })
  local l = msg:recipient_list()
  assert(#l == 2 and l[1].email == 'a@x.example' and l[2].email == 'postmaster@example.com', #l)
  msg:set_recipient('b@y.example')
  assert(#msg:recipient_list() == 1 and msg:recipient().email == 'b@y.example')
  assert(msg:queue_name() == 'y.example', msg:queue_name())
  msg:set_meta('tenant', 'T')
  msg:set_meta('routing_domain', 'Relay.Example')
  assert(msg:queue_name() == 'T@y.example!relay.example', msg:queue_name())
  assert(msg:num_attempts() == 0)
  msg:increment_num_attempts()
  assert(msg:num_attempts() == 1)
  msg:append_header('X-One', '1')
  msg:append_header('x-two', 'folded ' .. string.rep('y', 100))
  local h = msg:get_all_headers()
  assert(h[1][1] == 'From', h[1][1])
  assert(h[#h][1] == 'x-two' and h[#h][2] == 'folded ' .. string.rep('y', 100), h[#h][2])
  msg:remove_x_headers({ 'X-One' })
  assert(msg:get_first_named_header_value('X-One') == nil)
  assert(msg:get_first_named_header_value('x-two') ~= nil)
  msg:remove_x_headers()
  assert(msg:get_first_named_header_value('X-Two') == nil)
  assert(msg:get_first_named_header_value('Subject') ~= nil)
  local ok, e = pcall(msg.set_recipient, msg, 'bad address')
  assert(not ok and e:find("msg:set_recipient: 'bad address' is not a valid envelope address",
    1, true), e)
  assert(not pcall(msg.set_recipient, msg, {}))
  assert(not pcall(msg.set_recipient, msg, 'Postmaster'))
  assert(not pcall(msg.set_sender, msg, 'a@b@c'))
  assert(msg:recipient().email == 'b@y.example') -- a refused change changes nothing
  msg:set_sender('') -- the null sender
  assert(msg:sender().email == '')
  kumo.log_info('MESSAGE-METHODS-DONE')
end)
"""


def test_message_methods(tmp_path):
    line = validate_clean(tmp_path, POLICY, "MESSAGE-METHODS-DONE")
    assert line.endswith("MESSAGE-METHODS-DONE")
