-- SPDX-License-Identifier: Apache-2.0
-- The sink: accepts and discards every message, with smart-sink behaviours
-- for testing senders. Run: build/kumod --policy sink/sink.lua (or `make sink`).
-- Environment (all optional):
--   KUMO_SINK_FAULTS          fault plan JSON (sink/README.md "Fault plans")
--   KUMO_SINK_LISTEN          listen address (default 127.0.0.1:$KUMO_SINK_PORT)
--   KUMO_SINK_PORT            port (default 2026)
--   KUMO_SINK_DEFER_PERCENT   random 451 for this share of recipients (0-100)
--   KUMO_SINK_BOUNCE_PERCENT  random 550 for this share of recipients (0-100)
--   KUMO_SINK_CAPTURE_DIR     store accepted messages maildir-style (tmp/ then new/)
--   KUMO_SINK_BUSY_POLL       kumo.set_busy_poll after input (default "50us"; "0" is off)
--   KUMO_SINK_HTTP            mail catcher API listen address (e.g. 127.0.0.1:8025); unset: off
--   KUMO_SINK_STORE           catcher store directory (default ./kumo-sink-store)
--   KUMO_SINK_MAX_MESSAGES    catcher retention by count (default 10000; 0 unlimited)
--   KUMO_SINK_MAX_BYTES       catcher retention by size in bytes (default 1073741824; 0 unlimited)
--   KUMO_SINK_SEGMENT_BYTES   catcher segment file size (default 67108864: 64 MiB)
-- See sink/README.md for the magic local parts.
local kumo = require("kumo")

local port = os.getenv("KUMO_SINK_PORT") or "2026"
local listen = os.getenv("KUMO_SINK_LISTEN") or ("127.0.0.1:" .. port)
local defer_percent = tonumber(os.getenv("KUMO_SINK_DEFER_PERCENT") or "0") or 0
local bounce_percent = tonumber(os.getenv("KUMO_SINK_BOUNCE_PERCENT") or "0") or 0
local capture_dir = os.getenv("KUMO_SINK_CAPTURE_DIR")
-- A sink under load answers faster when its loop does not fall asleep
-- between a reply and the client's next command: waking it costs the client
-- (docs/performance.md). Bounded: the loop sleeps 50us after the last input.
local busy_poll = os.getenv("KUMO_SINK_BUSY_POLL") or "50us"
-- The mail catcher (kumod extension): captured mail over a JSON API.
local http_listen = os.getenv("KUMO_SINK_HTTP")
local store = os.getenv("KUMO_SINK_STORE") or "./kumo-sink-store"
local function env_count(name, default)
	local v = os.getenv(name)
	if v == nil then
		return default
	end
	local n = math.tointeger(tonumber(v))
	assert(n and n >= 0, name .. ": expected a non-negative integer, got '" .. v .. "'")
	return n
end
-- Deterministic fault plan (JSON, see sink/README.md); also set at run
-- time with PUT /api/v1/faults when KUMO_SINK_HTTP is set.
local faults_env = os.getenv("KUMO_SINK_FAULTS")
local max_messages = env_count("KUMO_SINK_MAX_MESSAGES", 10000)
local max_bytes = env_count("KUMO_SINK_MAX_BYTES", 1073741824)
local segment_bytes = env_count("KUMO_SINK_SEGMENT_BYTES", 67108864)

kumo.on("init", function()
	if busy_poll ~= "0" then
		kumo.set_busy_poll(busy_poll)
	end
	kumo.start_esmtp_listener({
		listen = listen,
		-- A sink accepts mail for any destination from any peer.
		relay_hosts = { "0.0.0.0/0", "::/0" },
	})
	if http_listen then
		kumo.start_mail_catcher({
			dir = store,
			max_messages = max_messages,
			max_bytes = max_bytes,
			segment_bytes = segment_bytes,
		})
		-- trusted_hosts stays loopback-only; a non-loopback address also
		-- needs credentials (http_server_validate_auth_*).
		kumo.start_http_listener({ listen = http_listen })
	end
	if faults_env then
		kumo.mail_catcher_set_faults(faults_env) -- raises on an invalid plan: fail closed
	end
	if capture_dir then
		-- Operator-supplied path (never envelope data), shell-quoted.
		local q = "'" .. capture_dir:gsub("'", "'\\''") .. "'"
		assert(os.execute("mkdir -p " .. q .. "/tmp " .. q .. "/new"), "cannot create " .. capture_dir)
	end
	-- The effective settings, so a user sees which KUMO_SINK_* variables took effect.
	kumo.log_info(
		string.format(
			"sink settings: listen=%s defer_percent=%s bounce_percent=%s capture_dir=%s busy_poll=%s "
				.. "ui=%s catcher=%s store=%s max_messages=%s max_bytes=%s faults=%s",
			listen,
			defer_percent,
			bounce_percent,
			capture_dir or "-",
			busy_poll,
			http_listen and ("http://" .. http_listen .. "/") or "-",
			http_listen and ("http://" .. http_listen .. "/api/v1/messages") or "-",
			http_listen and store or "-",
			max_messages,
			max_bytes,
			faults_env and "KUMO_SINK_FAULTS" or "-"
		)
	)
end)

-- Magic local parts, first match wins (KumoMTA's test sink, with our codes).
-- Runs for every MAIL FROM and RCPT TO, so the common case (no magic word,
-- no leading digit) costs two plain substring searches and a byte test.
local function magic(user)
	if user:find("full", 1, true) or user:find("fail", 1, true) then
		if user:find("full-enh", 1, true) then
			return 452, "4.1.1 mailbox is full"
		elseif user:find("full", 1, true) then
			return 452, "mailbox is full"
		elseif user:find("tempfail", 1, true) then
			return 451, "4.7.1 tempfail requested"
		elseif user:find("permfail", 1, true) then
			return 550, "5.7.1 permfail requested"
		end
	end
	local b = user:byte(1)
	if b and b >= 48 and b <= 57 then
		local code = user:match("^(%d%d%d)%-")
		if code then
			code = tonumber(code)
			if code >= 400 and code <= 599 then
				return code, "you said " .. user
			end
		end
	end
	return nil
end

-- Fault plans: rules {stage, match, code, text, disconnect, first, rate,
-- window, delay, hang} checked in order at each stage; the first rule that
-- fires answers. State (counts) restarts with every new plan version.
local fault_version, fault_rules, fault_counts, fault_age = -1, {}, {}, 0
-- The plan has data_command rules: MAIL and RCPT keep the envelope in
-- conn_meta for them (the DATA command's event has no message).
local fault_data_command = false

local function fault_refresh()
	local v, age, plan = kumo.mail_catcher_faults(fault_version)
	fault_age = age
	if v ~= fault_version then
		fault_version, fault_rules, fault_counts = v, plan and plan.rules or {}, {}
		fault_data_command = false
		for _, r in ipairs(fault_rules) do
			fault_data_command = fault_data_command or r.stage == "data_command"
		end
	end
end

local function client_ip(peer)
	return (peer or ""):match("^%[(.*)%]:%d+$") or (peer or ""):match("^(.*):%d+$") or peer or ""
end

-- Applies a fault: a delay or a hang holds the reply; a code answers (and
-- does not return). Returns true when the reply hangs.
local function fault_apply(delay, hang, code, text, disconnect)
	if hang then
		kumo.delay_reply("hang")
	elseif delay then
		kumo.delay_reply(delay)
	end
	if code and disconnect then
		kumo.disconnect(code, text)
	elseif code then
		kumo.reject(code, text)
	end
	return hang
end

-- Returns true when the reply hangs (the stage's reply is never sent).
local function fault_check(stage, ctx)
	fault_refresh()
	local age = fault_age
	for i, r in ipairs(fault_rules) do
		if r.stage == stage then
			local m, hit = r.match, true
			if m then
				for k, want in pairs(m) do
					if (ctx[k] or ""):lower() ~= want:lower() then
						hit = false
					end
				end
			end
			if hit and r.window then
				hit = age >= r.window[1] and age < r.window[2]
			end
			if hit and r.first then
				local key = i .. "|" .. (ctx.rcpt or ctx.sender or ctx.client)
				local n = (fault_counts[key] or 0) + 1
				fault_counts[key] = n
				hit = n <= r.first
			end
			if hit and r.rate then
				-- more than `rate` from one client: the excess gets the fault
				local t = kumo.make_throttle("sink-fault:" .. fault_version .. ":" .. i .. ":" .. ctx.client, r.rate)
				hit = t:throttle().throttled
			end
			if hit then
				-- a delay alone: the usual reply, late
				return fault_apply(r.delay, r.hang, r.code, r.text, r.disconnect)
			end
		end
	end
	return false
end

-- Magic senders for the DATA command and the end of data (after the final
-- dot): ACTION-in-data-command[-ARG] and ACTION-in-data[-ARG], ACTION one
-- of delay (ARG milliseconds), hang, disconnect, reject (ARG the code).
local function magic_stage(user)
	if not user:find("-in-data", 1, true) then
		return nil
	end
	local action, stage, arg = user:match("^(%a+)%-in%-(data%-command)%-?(%d*)")
	if not action then
		action, stage, arg = user:match("^(%a+)%-in%-(data)%-?(%d*)")
	end
	if stage then
		return action, stage == "data" and "data" or "data_command", tonumber(arg)
	end
	return nil
end

-- Returns true when the reply hangs.
local function magic_apply(user, action, arg)
	if action == "delay" then
		return fault_apply(math.min(arg or 1000, 600000))
	elseif action == "hang" then
		return fault_apply(nil, true)
	elseif action == "disconnect" then
		fault_apply(nil, nil, 451, "disconnecting " .. user, true)
	elseif action == "reject" and arg and arg >= 400 and arg <= 599 then
		fault_apply(nil, nil, arg, "you said " .. user)
	end
	return false
end

local function addr_ctx(addr, conn_meta, key)
	local ctx = { client = client_ip(conn_meta:get_meta("received_from")), domain = addr.domain }
	ctx[key] = tostring(addr)
	return ctx
end

kumo.on("smtp_server_connection_accepted", function(conn_meta)
	fault_check("connect", { client = client_ip(conn_meta:get_meta("received_from")) })
end)

kumo.on("smtp_server_ehlo", function(domain, conn_meta)
	fault_check("ehlo", { client = client_ip(conn_meta:get_meta("received_from")), domain = domain })
end)

local function check(addr)
	local code, text = magic(addr.user)
	if code == 421 then
		kumo.disconnect(421, text) -- "421 you said 421-bye", then the connection closes
	elseif code then
		kumo.reject(code, text)
	end
end

-- A sender with a DATA command fault, or a plan with data_command rules,
-- has put keys into conn_meta: a later transaction starts without them.
local envelope_in_meta = false

kumo.on("smtp_server_mail_from", function(sender, conn_meta)
	check(sender)
	fault_check("mail", addr_ctx(sender, conn_meta, "sender"))
	if envelope_in_meta then
		conn_meta:set_meta("sink_magic", nil)
		conn_meta:set_meta("sink_sender", nil)
		conn_meta:set_meta("sink_rcpt", nil)
	end
	local action, stage, arg = magic_stage(sender.user)
	if stage == "data_command" then
		envelope_in_meta = true
		conn_meta:set_meta("sink_magic", action .. ":" .. (arg or "") .. ":" .. sender.user)
	end
	if fault_data_command then
		envelope_in_meta = true
		conn_meta:set_meta("sink_sender", tostring(sender))
	end
end)

kumo.on("smtp_server_rcpt_to", function(recipient, conn_meta)
	check(recipient)
	fault_check("rcpt", addr_ctx(recipient, conn_meta, "rcpt"))
	if fault_data_command and not conn_meta:get_meta("sink_rcpt") then
		envelope_in_meta = true
		conn_meta:set_meta("sink_rcpt", tostring(recipient))
	end
	if bounce_percent > 0 or defer_percent > 0 then
		local roll = math.random() * 100
		if roll < bounce_percent then
			kumo.reject(550, "5.7.1 boing!")
		elseif roll < bounce_percent + defer_percent then
			kumo.reject(451, "4.7.1 later!")
		end
	end
end)

-- The DATA command (kumod extension event), before its 354.
kumo.on("smtp_server_data_command", function(conn_meta)
	local m = envelope_in_meta and conn_meta:get_meta("sink_magic")
	if m then
		local action, arg, user = m:match("^(%a+):(%d*):(.*)$")
		magic_apply(user, action, tonumber(arg))
	end
	if fault_data_command then
		local rcpt = conn_meta:get_meta("sink_rcpt") or ""
		fault_check("data_command", {
			client = client_ip(conn_meta:get_meta("received_from")),
			sender = conn_meta:get_meta("sink_sender"),
			rcpt = rcpt,
			domain = rcpt:match("@([^@]*)$"),
		})
	end
end)

local function capture(msg)
	local tmp = capture_dir .. "/tmp/" .. msg:id()
	local f = assert(io.open(tmp, "wb"))
	f:write(msg:get_data())
	f:close()
	assert(os.rename(tmp, capture_dir .. "/new/" .. msg:id() .. ".eml"))
end

kumo.on("smtp_server_message_received", function(msg)
	local sender = msg:sender()
	local action, stage, arg = magic_stage(sender.user)
	-- a hung reply: the client never hears of the message, nothing is kept
	local hung = stage == "data" and magic_apply(sender.user, action, arg)
	local rcpt = msg:recipient_list()[1]
	hung = fault_check("data", {
		client = client_ip(msg:get_meta("received_from")),
		sender = tostring(sender),
		rcpt = tostring(rcpt),
		domain = rcpt.domain,
	}) or hung
	local outcome = "accepted"
	if hung then
		outcome = "hang"
	else
		if capture_dir then
			capture(msg)
		end
		if http_listen then
			kumo.mail_catcher_capture(msg)
			outcome = "captured"
		end
	end
	-- One line per accepted message (lua=info; `make run` shows them).
	local rcpts = {}
	for i, r in ipairs(msg:recipient_list()) do
		rcpts[i] = tostring(r)
	end
	kumo.log_info(
		string.format(
			"sink message id=%s from=<%s> to=<%s> size=%d outcome=%s",
			msg:id(),
			tostring(sender),
			table.concat(rcpts, ">,<"),
			#msg:get_data(),
			outcome
		)
	)
	-- The 'null' queue counts the message and discards it.
	msg:set_meta("queue", "null")
end)
