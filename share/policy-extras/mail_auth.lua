-- SPDX-License-Identifier: Apache-2.0
-- kumod's policy-extras.mail_auth: KumoMTA's bundle of inbound authentication
-- checks (check, iprev, iprev_msg), written for kumod from KumoMTA's reference
-- pages (policy-extras.mail_auth/*) and RFC 8601, not from its source. DKIM
-- (msg:dkim_verify), SPF (kumo.spf.check_msg), iprev and the SMTP AUTH status
-- are collected; DMARC and ARC are not implemented in kumod, so check() refuses
-- to run unless the config turns them off (dmarc = false, arc = false) rather
-- than report an Authentication-Results field that silently lacks them.
local kumo = require("kumo")

local mod = {}

local BOOLS = { "dkim", "spf", "iprev", "smtp_auth", "dmarc", "arc", "add_auth_results_header" }

-- The config with its defaults; unknown keys and wrong types are errors.
local function check_config(config)
	if config == nil then
		config = {}
	end
	if type(config) ~= "table" then
		error("mail_auth.check: the config must be a table, got " .. type(config), 3)
	end
	local out = {}
	local known = { server_id = true, resolver = true }
	for _, k in ipairs(BOOLS) do
		known[k] = true
		local v = config[k]
		if v == nil then
			v = true
		elseif type(v) ~= "boolean" then
			error(string.format("mail_auth.check: %s must be a boolean, got %s", k, type(v)), 3)
		end
		out[k] = v
	end
	for k in pairs(config) do
		if not known[k] then
			error(string.format("mail_auth.check: unknown config key '%s'", tostring(k)), 3)
		end
	end
	if config.server_id ~= nil and type(config.server_id) ~= "string" then
		error("mail_auth.check: server_id must be a string", 3)
	end
	out.server_id = config.server_id
	out.resolver = config.resolver
	for _, k in ipairs({ "dmarc", "arc" }) do
		if out[k] then
			error(
				string.format(
					"mail_auth.check: the %s check is not implemented in kumod; pass "
						.. "%s = false in the config to run the other checks without it",
					k:upper(),
					k
				),
				3
			)
		end
	end
	return out
end

-- "1.2.3.4:25" / "[::1]:25" / a bare address -> the address.
local function ip_of(addr)
	if type(addr) ~= "string" then
		return nil
	end
	local v6 = addr:match("^%[([^%]]+)%]")
	if v6 then
		return v6
	end
	local v4 = addr:match("^(%d+%.%d+%.%d+%.%d+):%d+$")
	return v4 or addr
end

-- RFC 8601 section 3 iprev: the address's PTR names, each looked up forward; pass
-- when one of them has the address back.
function mod.iprev(ip, opt_resolver)
	local result = { method = "iprev", props = { ["smtp.remote-ip"] = ip } }
	local ok, names = pcall(kumo.dns.lookup_ptr, ip, opt_resolver)
	if not ok then
		result.result = "temperror"
		result.reason = tostring(names)
		return result
	end
	if #names == 0 then
		result.result = "fail"
		result.reason = "no PTR records for " .. ip
		return result
	end
	local temp = nil
	for i, name in ipairs(names) do
		if i > 10 then
			break
		end
		local host = name:gsub("%.$", "")
		local aok, addrs = pcall(kumo.dns.lookup_addr, host, opt_resolver)
		if aok then
			for _, a in ipairs(addrs) do
				if a == ip then
					result.result = "pass"
					result.props["policy.iprev"] = ip
					return result
				end
			end
		else
			temp = tostring(addrs)
		end
	end
	if temp and not tostring(temp):find("no address", 1, true) then
		result.result = "temperror"
		result.reason = temp
	else
		result.result = "fail"
		result.reason = "no PTR name of " .. ip .. " resolves back to it"
	end
	return result
end

function mod.iprev_msg(msg, opt_resolver)
	local ip = ip_of(msg:get_meta("received_from"))
	if not ip then
		error("mail_auth.iprev_msg: received_from missing from the message metadata", 2)
	end
	return mod.iprev(ip, opt_resolver)
end

function mod.check(msg, opt_config)
	local config = check_config(opt_config)
	local all = {}
	local out = {}
	if config.dkim then
		out.dkim = msg:dkim_verify(config.resolver)
		if #out.dkim == 0 then
			out.dkim = { { method = "dkim", result = "none", reason = "message was not signed" } }
		end
		for _, r in ipairs(out.dkim) do
			table.insert(all, r)
		end
	end
	if config.spf then
		out.spf = kumo.spf.check_msg(msg, config.resolver).result
		table.insert(all, out.spf)
	end
	if config.iprev then
		out.iprev = mod.iprev_msg(msg, config.resolver)
		table.insert(all, out.iprev)
	end
	if config.smtp_auth then
		local id = msg:get_meta("authn_id")
		local sender = msg:sender()
		out.smtp_auth = {
			method = "auth",
			result = id and "pass" or "none",
			props = { ["smtp.mailfrom"] = sender and tostring(sender) or "" },
		}
		if id then
			out.smtp_auth.props["smtp.auth"] = id
		end
		table.insert(all, out.smtp_auth)
	end
	out.auth_results = all
	if config.add_auth_results_header then
		local server_id = config.server_id or msg:get_meta("hostname") or "localhost"
		msg:add_authentication_results(server_id, all)
	end
	return out
end

return mod
