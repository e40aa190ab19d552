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


STRING_POLICY = r"""
local s = kumo.string
kumo.on('smtp_server_message_received', function(msg)
  -- kumo.string.eval_template: KumoMTA's documented example, escaping by name
  assert(s.eval_template('example.json', [[{{name}}]], { name = 'John' }) == '"John"')
  local h = s.eval_template('x.html', [[<b>{{ name }}</b>|{{ name | safe }}]], { name = '<a&b>' })
  assert(h == '<b>&lt;a&amp;b&gt;</b>|<a&b>', h)
  local t = s.eval_template('x.txt',
    [[{% for r in rs %}{{ loop.index }}={{ r.code }}{% if not loop.last %},{% endif %}{% endfor %}]],
    { rs = { { code = 250 }, { code = 451 } } })
  assert(t == '1=250,2=451', t)
  assert(s.eval_template('x', [[{{ a }}]], {}, 'Static') == '{{ a }}')
  local ok, e = pcall(s.eval_template, 'x.txt', [[{{ x | bogus }}]], {})
  assert(not ok and e:find("x.txt: line 1 column 8: unknown filter 'bogus'", 1, true), e)
  ok, e = pcall(s.eval_template, 'x.txt', [[{{ a - 1 }}]], { a = 'text' })
  assert(not ok and e:find("cannot apply '-' to string and integer", 1, true), e)
  ok, e = pcall(s.eval_template, 'x.txt', 'x', {}, 'Handlebars')
  assert(not ok and e:find("dialect 'Handlebars' is not implemented", 1, true), e)
  -- psl_domain / psl_suffix (libpsl's built-in list, private section included)
  assert(s.psl_domain('www.example.com') == 'example.com')
  assert(s.psl_suffix('www.example.com') == 'com')
  assert(s.psl_domain('a.b.Example.CO.uk.') == 'example.co.uk')
  assert(s.psl_suffix('a.b.example.co.uk') == 'co.uk')
  assert(s.psl_domain('co.uk') == nil)
  assert(s.psl_domain('x.github.io') == 'x.github.io')
  assert(s.psl_suffix('x.github.io') == 'github.io')
  kumo.log_info('STRING-DONE')
end)
"""


def test_string_templates_and_psl(tmp_path):
    line = validate_clean(tmp_path, STRING_POLICY, "STRING-DONE")
    assert line.endswith("STRING-DONE")


ADDRESS_POLICY = r"""
kumo.on('smtp_server_message_received', function(msg)
  msg:remove_all_named_headers('From')
  msg:remove_all_named_headers('To')
  assert(msg:from_header() == nil and msg:to_header() == nil)
  msg:append_header('From', '"Smith, John" <John.Smith@Example.com>')
  msg:append_header('To', 'a@x.example, =?utf-8?Q?J=C3=B6rg?= <j@y.example>, Team: t@z.example;')
  local f = msg:from_header()
  assert(f.name == 'Smith, John', f.name)
  assert(f.email == 'John.Smith@Example.com' and f.user == 'John.Smith', f.email)
  assert(f.domain == 'Example.com' and #f.list == 1)
  assert(tostring(f) == '[{"name":"Smith, John","address":"John.Smith@Example.com"}]',
    tostring(f))
  local t = msg:to_header()
  assert(#t.list == 3, #t.list)
  assert(t.list[1].email == 'a@x.example' and t.list[1].name == nil)
  assert(t.list[2].name == 'J\xc3\xb6rg' and t.list[2].domain == 'y.example')
  assert(tostring(t.list[3]) == '{"name":null,"address":"t@z.example"}', tostring(t.list[3]))
  local ok, e = pcall(function() return t.email end)
  assert(not ok and e:find('not a single simple address', 1, true), e)
  msg:append_header('Reply-To', 'nobody at all')
  ok, e = pcall(msg.get_address_header, msg, 'Reply-To')
  assert(not ok and e:find("msg:get_address_header: Reply-To header: expected '@'", 1, true), e)
  assert(msg:get_address_header('to').list[1].user == 'a')
  kumo.log_info('ADDRESS-DONE')
end)
"""


def test_address_headers(tmp_path):
    line = validate_clean(tmp_path, ADDRESS_POLICY, "ADDRESS-DONE")
    assert line.endswith("ADDRESS-DONE")


CONFORMANCE_POLICY = r"""
kumo.on('smtp_server_message_received', function(msg)
  msg:set_data('Subject: hi\r\nFrom: <a@x.example>\r\n\r\nbody\r\n')
  local r = msg:check_fix_conformance(
    'MISSING_DATE_HEADER|MISSING_MESSAGE_ID_HEADER|MISSING_MIME_VERSION|LINE_TOO_LONG', '')
  assert(r == 'Message has conformance issues: MISSING_DATE_HEADER | MISSING_MESSAGE_ID_HEADER'
    .. ' | MISSING_MIME_VERSION', r)
  -- what is fixed is not reported; the fixes add the headers
  r = msg:check_fix_conformance('MISSING_DATE_HEADER|MISSING_MIME_VERSION',
    'MISSING_DATE_HEADER|MISSING_MIME_VERSION|MISSING_MESSAGE_ID_HEADER',
    { message_id = 'fixed@x.example' })
  assert(r == nil, r)
  assert(msg:get_first_named_header_value('MIME-Version') == '1.0')
  assert(msg:get_first_named_header_value('Message-ID') == '<fixed@x.example>')
  assert(msg:get_first_named_header_value('Date') ~= nil)
  assert(msg:check_fix_conformance(
    'MISSING_DATE_HEADER|MISSING_MESSAGE_ID_HEADER|MISSING_MIME_VERSION', '') == nil)
  -- detection of the others
  msg:set_data('Bad Name : v\r\nNoColon\r\nSubject: ' .. string.rep('x', 90) .. '\r\n\r\ncaf\xc3\xa9\n')
  r = msg:check_fix_conformance('MISSING_COLON_VALUE|NON_CANONICAL_LINE_ENDINGS|'
    .. 'NAME_ENDS_WITH_SPACE|LINE_TOO_LONG|NEEDS_TRANSFER_ENCODING', '')
  assert(r == 'Message has conformance issues: MISSING_COLON_VALUE | NON_CANONICAL_LINE_ENDINGS'
    .. ' | NAME_ENDS_WITH_SPACE | LINE_TOO_LONG | NEEDS_TRANSFER_ENCODING', r)
  -- refused by name: unknown flags, fixing a header line without a colon
  local ok, e = pcall(msg.check_fix_conformance, msg, 'MISSING_DATE', '')
  assert(not ok and e:find("checks: unknown flag 'MISSING_DATE'", 1, true), e)
  ok, e = pcall(msg.check_fix_conformance, msg, '', 'MISSING_COLON_VALUE|MISSING_DATE_HEADER')
  assert(not ok and e:find('fixing MISSING_COLON_VALUE is not implemented in kumod', 1, true), e)
  ok, e = pcall(msg.check_fix_conformance, msg, '', 'INVALID_MIME_HEADERS')
  assert(not ok and e:find('fixing INVALID_MIME_HEADERS is not implemented in kumod', 1, true), e)
  -- a rebuild that would lose a field raises; the body is unchanged
  local before = msg:get_data()
  ok, e = pcall(msg.check_fix_conformance, msg, '', 'LINE_TOO_LONG|MISSING_DATE_HEADER')
  assert(not ok and e:find('cannot rebuild the message to fix LINE_TOO_LONG: an invalid'
    .. ' header field name', 1, true), e)
  assert(msg:get_data() == before)
  msg:set_data('Subject: a\r\nNoColon\r\n\r\n' .. string.rep('y', 100) .. '\r\n')
  ok, e = pcall(msg.check_fix_conformance, msg, '', 'LINE_TOO_LONG')
  assert(not ok and e:find('cannot rebuild the message to fix LINE_TOO_LONG: a header line'
    .. ' without a colon (MISSING_COLON_VALUE)', 1, true), e)
  -- fixed: every line within 76 octets, CRLF only, the text decodes back
  msg:set_data('Subject : a\n\ncaf\xc3\xa9 ' .. string.rep('y', 100) .. '\n')
  r = msg:check_fix_conformance('MISSING_COLON_VALUE', 'LINE_TOO_LONG|NAME_ENDS_WITH_SPACE|'
    .. 'NEEDS_TRANSFER_ENCODING|NON_CANONICAL_LINE_ENDINGS')
  assert(r == nil, r)
  assert(msg:get_data() == 'Subject: a\r\nContent-Type: text/plain; charset=utf-8\r\n'
    .. 'MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    .. 'caf=C3=A9 ' .. string.rep('y', 65) .. '=\r\n' .. string.rep('y', 35) .. '\r\n',
    msg:get_data())
  assert(msg:check_fix_conformance('NON_CANONICAL_LINE_ENDINGS|NAME_ENDS_WITH_SPACE|'
    .. 'LINE_TOO_LONG|NEEDS_TRANSFER_ENCODING', '') == nil)
  ok, e = pcall(msg.check_fix_conformance, msg, '', '', { detect_encoding = true })
  assert(not ok and e:find('settings.detect_encoding is not implemented', 1, true), e)
  -- INVALID_MIME_HEADERS: a MIME field of any part that does not parse
  local mp = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n'
    .. '--b\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\nok\r\n'
    .. '--b\r\nContent-Disposition: attachment; filename=%s\r\n\r\nx\r\n--b--\r\n'
  msg:set_data(string.format(mp, '"a.txt"'))
  assert(msg:check_fix_conformance('INVALID_MIME_HEADERS', '') == nil)
  msg:set_data(string.format(mp, '@'))
  r = msg:check_fix_conformance('INVALID_MIME_HEADERS', '')
  assert(r == 'Message has conformance issues: INVALID_MIME_HEADERS', r)
  msg:set_data('Content-Type: text\r\n\r\nx\r\n')
  r = msg:check_fix_conformance('INVALID_MIME_HEADERS', '')
  assert(r == 'Message has conformance issues: INVALID_MIME_HEADERS', r)
  kumo.log_info('CONFORMANCE-DONE')
end)
"""


def test_check_fix_conformance(tmp_path):
    line = validate_clean(tmp_path, CONFORMANCE_POLICY, "CONFORMANCE-DONE")
    assert line.endswith("CONFORMANCE-DONE")
