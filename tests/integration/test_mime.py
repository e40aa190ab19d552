# SPDX-License-Identifier: Apache-2.0
"""KumoMTA's MimePart objects (kumo.mimepart, msg:parse_mime,
msg:append_text_plain/html): assertions inside a real kumod handler on
`--validate`'s sample message, and messages built or changed by a policy,
delivered to the sink and read back with Python's email package."""

import email
import email.policy
import smtplib

from test_policy_errors import validate_clean
from test_relay import captured, relay_start, sink_start, wait_until

MULTIPART = (
    "From: <a@x.example>\r\nSubject: =?UTF-8?B?Y2Fmw6k=?=\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
    "preamble\r\n"
    "--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
    "--inner\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 plain\r\n"
    "--inner\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
    "--inner--\r\n"
    "--outer\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\nContent-ID: <c1@x>\r\n\r\nJVBERi0=\r\n"
    "--outer--\r\nepilogue\r\n")

POLICY = r"""
local MULTIPART = %s
kumo.on('smtp_server_message_received', function(msg)
  local mp = kumo.mimepart.parse(MULTIPART)
  -- an unchanged tree prints as it was parsed
  assert(tostring(mp) == MULTIPART, tostring(mp))
  assert(mp.id == 0)
  assert(mp.headers:subject() == 'caf\xc3\xa9', mp.headers:subject())
  local s = mp:get_simple_structure()
  assert(s.header_part.id == 0)
  assert(s.text_part.body == 'caf\xc3\xa9 plain', s.text_part.body)
  assert(s.html_part.body == '<p>html</p>', s.html_part.body)
  assert(s.amp_html_part == nil)
  assert(#s.attachments == 1)
  local a = s.attachments[1]
  assert(a.file_name == 'report.pdf' and a.inline == false, a.file_name)
  assert(a.content_id == '<c1@x>' and a.content_type == 'application/pdf', a.content_id)
  assert(a.part.body == '%%PDF-', a.part.body)
  -- a part from the structure is the part in the tree
  s.text_part.body = 'PREPENDED!\r\n' .. s.text_part.body
  local again = kumo.mimepart.parse(tostring(mp)):get_simple_structure()
  assert(again.text_part.body == 'PREPENDED!\r\ncaf\xc3\xa9 plain', again.text_part.body)
  assert(again.html_part.body == '<p>html</p>')
  -- header map
  mp.headers:set_subject('gr\xc3\xbc\xc3\x9fe')
  assert(mp.headers:subject() == 'gr\xc3\xbc\xc3\x9fe')
  mp.headers:append('X-Added', 'yes')
  mp.headers:remove_all_named('From')
  local text = tostring(mp)
  assert(text:find('X-Added: yes\r\n', 1, true) and not text:find('From:', 1, true), text)
  -- replace_body picks the encoding; a new content type is applied
  a.part:replace_body('plain words\n', 'text/plain')
  local r = kumo.mimepart.parse(tostring(a.part))
  assert(r.body == 'plain words\r\n', r.body)
  assert(not tostring(a.part):find('base64', 1, true), tostring(a.part))
  -- clear refusals for what is not implemented
  local ok, e = pcall(function() return mp.headers:from() end)
  assert(not ok and e:find('HeaderMap:from is not implemented in kumod', 1, true), e)
  ok, e = pcall(function() return mp.nope end)
  assert(not ok and e:find('MimePart.nope is not implemented in kumod', 1, true), e)
  ok, e = pcall(function() return mp.body end)
  assert(not ok and e:find('a multipart part has no body of its own', 1, true), e)
  ok, e = pcall(function() s.text_part:append_part(a.part) end)
  assert(not ok and e:find('not a multipart', 1, true), e)
  -- builders
  local t = kumo.mimepart.new_text_plain('hello\r\n')
  assert(tostring(t) == 'Content-Type: text/plain; charset=us-ascii\r\n\r\nhello\r\n', tostring(t))
  local h = kumo.mimepart.new_html('<b>caf\xc3\xa9</b>')
  assert(tostring(h):find('charset=utf-8', 1, true) and h.body == '<b>caf\xc3\xa9</b>')
  local b = kumo.mimepart.new_binary('image/png', '\x89PNG\0\1', { file_name = 'p.png' })
  assert(b.body == '\x89PNG\0\1')
  local m = kumo.mimepart.new_multipart('multipart/mixed', { t, h }, 'bnd')
  m:append_part(b)
  local st = m:get_simple_structure()
  assert(st.text_part.body == 'hello\r\n' and st.html_part == h and #st.attachments == 1)
  assert(st.attachments[1].file_name == 'p.png')
  ok, e = pcall(kumo.mimepart.new_multipart, 'multipart/mixed', {}, 'bad\nboundary')
  assert(not ok and e:find('invalid boundary', 1, true), e)
  -- the builder: alternative inside mixed, root headers, stable boundaries
  local bl = kumo.mimepart.builder()
  bl:text_plain('Hello there!')
  bl:text_html('<b>Hello</b>')
  bl:attach('application/octet-stream', '\xaa\xbb', { file_name = 'binary.dat' })
  bl:set_stable_content(true)
  local root = bl:build()
  local rt = tostring(root)
  assert(rt:sub(1, 207) == 'Content-Type: multipart/mixed; boundary="mm-boundary"\r\n'
    .. 'Mime-Version: 1.0\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\n--mm-boundary\r\n'
    .. 'Content-Type: multipart/alternative; boundary="ma-boundary"\r\n\r\n--ma-boundary\r\n', rt)
  local rs = kumo.mimepart.parse(rt):get_simple_structure()
  assert(rs.text_part.body == 'Hello there!' and rs.html_part.body == '<b>Hello</b>')
  assert(#rs.attachments == 1 and rs.attachments[1].file_name == 'binary.dat')
  assert(rs.attachments[1].part.body == '\xaa\xbb')
  ok, e = pcall(bl.build, bl)
  assert(not ok and e:find('builder:build: the builder was already built', 1, true), e)
  local empty = kumo.mimepart.builder()
  ok, e = pcall(empty.build, empty)
  assert(not ok and e:find('no text, html or attachment', 1, true), e)
  local one = kumo.mimepart.builder()
  one:text_plain('only')
  assert(one:build().body == 'only')
  -- rebuild: as check_fix_conformance's fix, on a new part
  local lf = kumo.mimepart.parse('Subject: a\n\nbare\n')
  local rb = lf:rebuild()
  assert(tostring(rb) == 'Subject: a\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: 7bit'
    .. '\r\n\r\nbare\r\n', tostring(rb))
  assert(tostring(lf) == 'Subject: a\n\nbare\n')
  -- the message
  msg:set_data('Subject: m\r\nContent-Type: text/plain\r\n\r\nbody\r\n')
  local pm = msg:parse_mime()
  assert(pm.body == 'body\r\n', pm.body)
  assert(msg:append_text_plain('more \xc3\xa9\r\n') == true)
  local after = msg:parse_mime()
  assert(after.body == 'body\r\nmore \xc3\xa9\r\n', after.body)
  assert(msg:get_data():find('charset=utf-8', 1, true), msg:get_data())
  assert(msg:append_text_html('<p>x</p>') == false)
  kumo.log_info('MIME-DONE')
end)
""" % ("'" + MULTIPART.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
       .replace("'", "\\'") + "'")


def test_mimepart_api(tmp_path):
    line = validate_clean(tmp_path, POLICY, "MIME-DONE")
    assert line.endswith("MIME-DONE")


BUILD_POLICY = """
kumo.on('smtp_server_message_received', function(msg)
  local subject = msg:get_first_named_header_value('Subject')
  if subject == 'build' then
    local b = kumo.mimepart.new_multipart('multipart/mixed', {
      kumo.mimepart.new_multipart('multipart/alternative', {
        kumo.mimepart.new_text_plain('caf\\xc3\\xa9 ' .. string.rep('long ', 40) .. '\\r\\n'),
        kumo.mimepart.new_html('<p>caf\\xc3\\xa9</p>\\r\\n'),
      }),
      kumo.mimepart.new_binary('application/octet-stream', '\\0\\1\\2\\255',
        { file_name = 'data.bin' }),
    })
    b.headers:append('From', '<sender@example.com>')
    b.headers:append('Subject', 'built')
    b.headers:append('MIME-Version', '1.0')
    msg:set_data(tostring(b))
  elseif subject == 'builder' then
    local bl = kumo.mimepart.builder()
    bl:text_plain('plain \\xc3\\xa9\\r\\n')
    bl:text_html('<i>html</i>\\r\\n')
    bl:attach('text/csv', 'a,b\\r\\n1,2\\r\\n', { file_name = 'r.csv' })
    local root = bl:build()
    root.headers:append('From', '<sender@example.com>')
    root.headers:append('Subject', 'from builder')
    msg:set_data(tostring(root))
  else
    msg:append_text_plain('appended \\xc3\\xa9\\r\\n')
  end
end)
"""


def test_built_and_appended_messages_delivered(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay = relay_start(kumod, tmp_path / "var", ["127.0.0.1:%d" % sink.smtp_port],
                        extra=BUILD_POLICY)
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=15) as s:
        s.ehlo("client.test")
        s.sendmail("sender@example.com", ["b@example.com"],
                   b"From: <sender@example.com>\r\nSubject: build\r\n\r\nx\r\n")
        s.sendmail("sender@example.com", ["c@example.com"],
                   b"From: <sender@example.com>\r\nSubject: builder\r\n\r\nx\r\n")
        s.sendmail("sender@example.com", ["a@example.com"],
                   b"From: <sender@example.com>\r\nSubject: append\r\n"
                   b"Content-Type: text/plain\r\n\r\nfirst line\r\n")
    files = wait_until(lambda: len(captured(capture)) >= 3 and captured(capture))
    assert files and len(files) == 3, relay.stderr()
    got = {}
    for f in files:
        m = email.message_from_bytes(open(f, "rb").read(), policy=email.policy.default)
        got[str(m["Subject"])] = m
    assert set(got) == {"built", "append", "from builder"}
    b = got["built"]
    assert b.get_content_type() == "multipart/mixed"
    text = b.get_body(preferencelist=("plain",))
    assert text.get_content().replace("\r\n", "\n") == "caf\u00e9 " + "long " * 40 + "\n"
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    html = b.get_body(preferencelist=("html",))
    assert html.get_content().replace("\r\n", "\n") == "<p>caf\u00e9</p>\n"
    atts = list(b.iter_attachments())
    assert len(atts) == 1 and atts[0].get_filename() == "data.bin"
    assert atts[0].get_content() == b"\0\1\2\xff"
    bb = got["from builder"]
    assert bb.get_content_type() == "multipart/mixed" and bb["MIME-Version"] == "1.0"
    assert bb["Date"] is not None
    alt = next(bb.iter_parts())
    assert alt.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alt.iter_parts()] == ["text/plain", "text/html"]
    assert (bb.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
            == "plain \u00e9\n")
    csv = list(bb.iter_attachments())
    assert len(csv) == 1 and csv[0].get_filename() == "r.csv"
    assert csv[0].get_payload(decode=True) == b"a,b\r\n1,2\r\n"
    a = got["append"]
    assert a.get_content_charset() == "utf-8"
    assert a.get_content().replace("\r\n", "\n") == "first line\nappended \u00e9\n"
    assert relay.stop() == 0
