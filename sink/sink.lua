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
-- window} checked in order at each stage; the first rule that fires
-- answers. State (counts) restarts with every new plan version.
local fault_version, fault_rules, fault_counts = -1, {}, {}

local function client_ip(peer)
	return (peer or ""):match("^%[(.*)%]:%d+$") or (peer or ""):match("^(.*):%d+$") or peer or ""
end

local function fault_check(stage, ctx)
	local v, age, plan = kumo.mail_catcher_faults(fault_version)
	if v ~= fault_version then
		fault_version, fault_rules, fault_counts = v, plan and plan.rules or {}, {}
	end
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
				if r.hang then
					kumo.delay_reply("hang")
				elseif r.delay then
					kumo.delay_reply(r.delay)
				end
				if not r.code then
					return -- a delay alone: the usual reply, late
				end
				if r.disconnect then
					kumo.disconnect(r.code, r.text)
				end
				kumo.reject(r.code, r.text)
			end
		end
	end
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

kumo.on("smtp_server_mail_from", function(sender, conn_meta)
	check(sender)
	fault_check("mail", addr_ctx(sender, conn_meta, "sender"))
end)

kumo.on("smtp_server_rcpt_to", function(recipient, conn_meta)
	check(recipient)
	fault_check("rcpt", addr_ctx(recipient, conn_meta, "rcpt"))
	if bounce_percent > 0 or defer_percent > 0 then
		local roll = math.random() * 100
		if roll < bounce_percent then
			kumo.reject(550, "5.7.1 boing!")
		elseif roll < bounce_percent + defer_percent then
			kumo.reject(451, "4.7.1 later!")
		end
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
	if sender.user:find("disconnect-in-data", 1, true) == 1 then
		kumo.disconnect(451, "disconnecting " .. sender.user)
	end
	local rcpt = msg:recipient_list()[1]
	fault_check("data", {
		client = client_ip(msg:get_meta("received_from")),
		sender = tostring(sender),
		rcpt = tostring(rcpt),
		domain = rcpt.domain,
	})
	if capture_dir then
		capture(msg)
	end
	local outcome = "accepted"
	if http_listen then
		kumo.mail_catcher_capture(msg)
		outcome = "captured"
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
