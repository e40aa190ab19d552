-- kumod's shaping data: loading and merging shaping.toml/JSON files (a
-- "default" block, per-domain blocks rolled up by MX site or not,
-- per-source overrides, providers matched by domain suffix or MX host
-- names, automation rules) and resolving the egress path settings of a
-- (domain, source, site) and the automation rules a delivery record
-- matches. Shared by kumod's policy-extras.shaping and by
-- kumo.shaping.load (KumoMTA's Lua API, which KumoMTA's own shaping.lua
-- calls). Written for kumod (see docs/policy-extras.md); not derived from
-- KumoMTA's source.
local kumo = require("kumo")
local utils = require("policy-extras.policy_utils")
local helpers = require("policy-extras.kumod_helpers")

local mod = {}

local function fail(fmt, ...)
	error(string.format(fmt, ...), 0)
end

-- The directory of this file: kumod's own default shaping.toml is next to
-- it (KumoMTA's /opt/kumomta/share/policy-extras/shaping.toml).
function mod.default_file()
	local src = debug.getinfo(1, "S").source
	local dir = src:match("^@(.*)/[^/]*$") or "."
	return dir .. "/shaping.toml"
end

local function is_array(v)
	return type(v) == "table" and (#v > 0 or next(v) == nil)
end

-- Automation rules (KumoMTA's shaping.toml `automation` entries) ------

-- KumoMTA's actions: plain names, and those that carry a path setting.
local PLAIN_ACTIONS = {
	Suspend = true,
	SuspendTenant = true,
	SuspendCampaign = true,
	Bounce = true,
	BounceTenant = true,
	BounceCampaign = true,
}
local CONFIG_ACTIONS = { SetConfig = true, SetDomainConfig = true }

local RULE_KEYS = "regex, action, trigger, duration or match_internal"

local function parse_action(a, where)
	if type(a) == "string" then
		if PLAIN_ACTIONS[a] then
			return { kind = a }
		end
		if CONFIG_ACTIONS[a] then
			fail("%s: %s needs a table: { %s = { name = ..., value = ... } }", where, a, a)
		end
		fail(
			"%s: unknown action '%s' (expected Suspend, SuspendTenant, SuspendCampaign, Bounce, BounceTenant, BounceCampaign, SetConfig or SetDomainConfig)",
			where,
			a
		)
	end
	if type(a) ~= "table" or is_array(a) then
		fail("%s: an action is a name or a table like { SetConfig = { name = ..., value = ... } }", where)
	end
	local kind, body = next(a)
	if next(a, kind) ~= nil or not CONFIG_ACTIONS[kind] then
		fail("%s: an action table holds exactly one of SetConfig or SetDomainConfig", where)
	end
	if type(body) ~= "table" or type(body.name) ~= "string" or body.value == nil then
		fail("%s: %s needs { name = <egress path key>, value = ... }", where, kind)
	end
	for k in pairs(body) do
		if k ~= "name" and k ~= "value" then
			fail("%s: %s: unknown key '%s' (expected name and value)", where, kind, tostring(k))
		end
	end
	local ok, err = pcall(kumo.make_egress_path, { [body.name] = body.value })
	if not ok then
		fail("%s: %s: %s", where, kind, tostring(err))
	end
	return { kind = kind, name = body.name, value = body.value }
end

-- A rule checked and normalised: {regex = {..}, action = {{kind, name,
-- value}..}, threshold = "N/period" or nil, duration = seconds,
-- match_internal}. Plain data (kept in the memoized shaping data).
function mod.parse_rule(r, where)
	if type(r) ~= "table" or is_array(r) then
		fail("%s: expected a table with %s", where, RULE_KEYS)
	end
	local rule = { action = {}, match_internal = false }
	for k, v in pairs(r) do
		if k == "regex" then
			local list = type(v) == "string" and { v } or v
			if not is_array(list) or #list == 0 then
				fail("%s: regex must be a string or a list of strings", where)
			end
			for i, p in ipairs(list) do
				if type(p) ~= "string" then
					fail("%s: regex %d must be a string", where, i)
				end
				local ok, err = pcall(kumo.regex.compile, p)
				if not ok then
					fail("%s: regex %d: %s", where, i, tostring(err))
				end
			end
			rule.regex = list
		elseif k == "action" then
			local list = (type(v) == "table" and is_array(v)) and v or { v }
			if #list == 0 then
				fail("%s: action must not be empty", where)
			end
			for i, a in ipairs(list) do
				table.insert(rule.action, parse_action(a, string.format("%s: action %d", where, i)))
			end
		elseif k == "trigger" then
			if v == "Immediate" then
				rule.threshold = nil
			elseif type(v) == "table" and type(v.Threshold) == "string" and next(v, next(v)) == nil then
				local n = tonumber(v.Threshold:match("^%s*(%d+)"))
				local ok = n and pcall(kumo.make_egress_path, { max_message_rate = v.Threshold })
				if not ok or n < 1 or n > 100000 then
					fail(
						"%s: trigger: Threshold '%s' is not a rate like \"10/hour\" (1 to 100000 per period)",
						where,
						v.Threshold
					)
				end
				rule.threshold = v.Threshold
			else
				fail('%s: trigger must be "Immediate" or { Threshold = "N/period" }', where)
			end
		elseif k == "duration" then
			local ok, d = pcall(kumo.time.parse_duration, v)
			if not ok or d.seconds <= 0 then
				fail("%s: duration: '%s' is not a positive duration", where, tostring(v))
			end
			rule.duration = d.seconds
		elseif k == "match_internal" then
			if type(v) ~= "boolean" then
				fail("%s: match_internal must be a boolean", where)
			end
			rule.match_internal = v
		else
			fail("%s: unknown key '%s' (expected %s)", where, tostring(k), RULE_KEYS)
		end
	end
	for _, k in ipairs({ "regex", "action", "duration" }) do
		if rule[k] == nil then
			fail("%s: %s is required", where, k)
		end
	end
	rule.text = table.concat(rule.regex, " | ")
	return rule
end

-- Checks one block of egress path settings; returns {opts, sources,
-- replace_base}. `extra` lists additional keys allowed in this kind of
-- block.
local function parse_block(data, where, extra)
	if type(data) ~= "table" or is_array(data) then
		fail("%s: expected a table", where)
	end
	local b = { opts = {}, sources = {}, extra = {}, automation = {} }
	for k, v in pairs(data) do
		if k == "automation" then
			if not is_array(v) then
				fail("%s: automation must be a list of rules", where)
			end
			for i, r in ipairs(v) do
				table.insert(b.automation, mod.parse_rule(r, string.format("%s: automation rule %d", where, i)))
			end
		elseif k == "mx_rollup" then
			if type(v) ~= "boolean" then
				fail("%s: mx_rollup must be a boolean", where)
			end
			b.mx_rollup = v
		elseif k == "replace_base" then
			if type(v) ~= "boolean" then
				fail("%s: replace_base must be a boolean", where)
			end
			b.replace_base = v
		elseif k == "sources" then
			if type(v) ~= "table" then
				fail("%s: sources must be a table of source names", where)
			end
			for s, sv in pairs(v) do
				local sb = parse_block(sv, string.format("%s.sources.'%s'", where, s), {})
				if next(sb.sources) then
					fail("%s.sources.'%s': sources cannot nest", where, s)
				end
				if #sb.automation > 0 or sb.mx_rollup ~= nil then
					fail("%s.sources.'%s': automation and mx_rollup belong to the block, not to a source", where, s)
				end
				b.sources[s] = sb.opts
			end
		elseif extra[k] then
			b.extra[k] = v
		else
			b.opts[k] = v
		end
	end
	-- make_egress_path names a bad key or value
	local ok, err = pcall(kumo.make_egress_path, b.opts)
	if not ok then
		fail("%s: %s", where, tostring(err))
	end
	return b
end

-- Later files merge over earlier ones key by key (additional_* tables
-- merge their entries); replace_base discards what came before.
local function merge_opts(dest, src)
	for k, v in pairs(src) do
		if
			(
				k == "additional_connection_limits"
				or k == "additional_message_rate_throttles"
				or k == "additional_source_selection_rates"
			) and type(dest[k]) == "table"
		then
			utils.merge_into(v, dest[k])
		else
			dest[k] = helpers.deep_copy(v)
		end
	end
end

local function merge_block(target, b)
	if not target or b.replace_base then
		return b -- freshly parsed: nothing else holds it
	end
	merge_opts(target.opts, b.opts)
	for _, r in ipairs(b.automation) do
		table.insert(target.automation, r)
	end
	if b.mx_rollup ~= nil then
		target.mx_rollup = b.mx_rollup
	end
	for s, o in pairs(b.sources) do
		target.sources[s] = target.sources[s] or {}
		merge_opts(target.sources[s], o)
	end
	utils.merge_into(b.extra, target.extra)
	return target
end

local PROVIDER_KEYS = {
	match = true,
	provider_connection_limit = true,
	provider_max_message_rate = true,
}

-- Provider keys that become named entries of egress path tables.
local PROVIDER_LIMITS = {
	provider_connection_limit = { key = "additional_connection_limits", suffix = "limit" },
	provider_max_message_rate = { key = "additional_message_rate_throttles", suffix = "rate" },
}

local function check_match(rules, where)
	if rules == nil then
		return -- KumoMTA's default: no rules, the provider matches nothing (yet)
	end
	if not is_array(rules) then
		fail("%s: match must be a list of rules", where)
	end
	for i, r in ipairs(rules) do
		local n = 0
		for k, v in pairs(r) do
			n = n + 1
			if k ~= "DomainSuffix" and k ~= "MXSuffix" and k ~= "HostName" then
				fail(
					"%s: match rule %d: unknown rule '%s' (expected DomainSuffix, MXSuffix or HostName)",
					where,
					i,
					tostring(k)
				)
			elseif type(v) ~= "string" then
				fail("%s: match rule %d: %s must be a string", where, i, k)
			end
		end
		if n ~= 1 then
			fail("%s: match rule %d must have exactly one key", where, i)
		end
	end
end

function mod.load_data(files)
	local data = { domains = {}, domain_order = {}, providers = {}, provider_order = {} }
	for _, f in ipairs(files) do
		if type(f) == "string" and f:find("^https?://") then
			fail("shaping helper: %s: loading shaping data over HTTP is not implemented by kumod yet", f)
		end
		local raw, src = helpers.load_data_file(f, "shaping helper")
		for name, v in pairs(raw) do
			if name == "provider" then
				if type(v) ~= "table" then
					fail("shaping helper: %s: [provider] must be a table", src)
				end
				local names = utils.table_keys(v)
				table.sort(names)
				for _, pname in ipairs(names) do
					local where = string.format("shaping helper: %s: [provider.'%s']", src, pname)
					local b = parse_block(v[pname], where, PROVIDER_KEYS)
					if not data.providers[pname] then
						table.insert(data.provider_order, pname)
					end
					data.providers[pname] = merge_block(data.providers[pname], b)
					check_match(data.providers[pname].extra.match, where)
					data.providers[pname].extra.match = data.providers[pname].extra.match or {}
					for key, to in pairs(PROVIDER_LIMITS) do
						local path_key = to.key
						local v = data.providers[pname].extra[key]
						if v ~= nil then
							local good, err = pcall(kumo.make_egress_path, { [path_key] = { probe = v } })
							if not good then
								fail("%s: %s (becomes %s): %s", where, key, path_key, tostring(err))
							end
						end
					end
				end
			else
				local where = string.format("shaping helper: %s: ['%s']", src, name)
				if not data.domains[name] then
					table.insert(data.domain_order, name)
				end
				data.domains[name] = merge_block(data.domains[name], parse_block(v, where, {}))
			end
		end
	end
	return data
end

-- MX rollup ------------------------------------------------------------
--
-- A domain block rolls up by MX site unless it says mx_rollup = false
-- (KumoMTA's default): it then applies to every domain whose MX hosts make
-- the same site name as the block's domain (kumod's site names, as the
-- ready queue names show them). kumod applies it to the domain named as
-- well, whatever its route. The site of a block's domain comes from
-- kumo.shaping.kumod_mx, which never waits (get_egress_path_config cannot):
-- the lookups start when the data is compiled, and until one answers the
-- block applies to its own domain only. `default` and wildcard blocks
-- never roll up.

local function rolls_up(name, b)
	return name ~= "default" and b.mx_rollup ~= false and not name:find("*", 1, true)
end

-- The compiled form of the data: domain map, regexes, rollup state.
function mod.compile(data)
	local blocks = {}
	local c = { regex = {}, rollup = {}, pending = {}, sites = {}, members = {}, failed = {} }
	for name, b in pairs(data.domains) do
		if name ~= "default" then
			blocks[name] = b
		end
	end
	c.map = kumo.domain_map.new(blocks)
	for _, name in ipairs(data.domain_order) do
		local b = data.domains[name]
		if b and rolls_up(name, b) then
			table.insert(c.rollup, name)
			c.pending[name] = true
		end
	end
	c.any_pending = #c.rollup > 0
	c.has_rules = false
	local function rules_of(b)
		if b and #b.automation > 0 then
			c.has_rules = true
		end
	end
	for _, b in pairs(data.domains) do
		rules_of(b)
	end
	for _, pname in ipairs(data.provider_order) do
		local p = data.providers[pname]
		rules_of(p)
		if #p.extra.match == 0 then
			kumo.log_warn(string.format("shaping: provider '%s' has no match rules: it applies to no domain", pname))
		end
	end
	mod.update_sites(data, c)
	return c
end

-- Takes in the MX answers that came since the last call; rebuilds the
-- site blocks (merged in file order) when any did.
function mod.update_sites(data, c)
	-- at most once a second: pending names are many in a large file
	local now = os.time()
	if not c.any_pending or (c.scanned and now < c.scanned + 1) then
		return
	end
	c.scanned = now
	local changed, left = false, false
	for name in pairs(c.pending) do
		local site, err = kumo.shaping.kumod_mx(name)
		if site then
			c.pending[name] = nil
			c.site_of = c.site_of or {}
			c.site_of[name] = site
			changed = true
		elseif err ~= "pending" and not tostring(err):find("^TEMPFAIL") then
			-- KumoMTA ignores such a block; kumod keeps it for its own domain
			c.pending[name] = nil
			c.failed[name] = err
			kumo.log_warn(
				string.format(
					"shaping: MX of '%s' (mx_rollup): %s; its block applies to '%s' only",
					name,
					tostring(err),
					name
				)
			)
		else
			left = true
		end
	end
	c.any_pending = left
	if not changed then
		return
	end
	local sites, members = {}, {}
	for _, name in ipairs(c.rollup) do
		local site = c.site_of and c.site_of[name]
		if site and site ~= "" then
			local b = data.domains[name]
			if sites[site] then
				merge_opts(sites[site].opts, b.opts)
				for s, o in pairs(b.sources) do
					sites[site].sources[s] = sites[site].sources[s] or {}
					merge_opts(sites[site].sources[s], o)
				end
				for _, r in ipairs(b.automation) do
					table.insert(sites[site].automation, r)
				end
			else
				sites[site] = {
					opts = helpers.deep_copy(b.opts),
					sources = helpers.deep_copy(b.sources),
					automation = { table.unpack(b.automation) },
				}
			end
			members[site] = members[site] or {}
			members[site][name] = true
		end
	end
	c.sites, c.members = sites, members
end

-- Providers -----------------------------------------------------------

local function host_matches(host, name)
	host = host:lower():gsub("%.$", "")
	return host == name:lower():gsub("%.$", "")
end

-- KumoMTA's rules: any DomainSuffix that the domain ends with; else, when
-- MXSuffix/HostName rules exist, every MX host must match one of them.
-- An MX not known yet (or failing) matches nothing.
local function provider_matches(p, domain)
	local need_mx = false
	for _, r in ipairs(p.extra.match) do
		-- plain string suffix, as KumoMTA: '.big.test' does not match 'big.test'
		if r.DomainSuffix and utils.ends_with(domain, r.DomainSuffix) then
			return true
		end
		if r.MXSuffix or r.HostName then
			need_mx = true
		end
	end
	if not need_mx then
		return false
	end
	local site, hosts = kumo.shaping.kumod_mx(domain)
	if not site or #hosts == 0 then
		return false
	end
	for _, host in ipairs(hosts) do
		local h = host:lower():gsub("%.$", "")
		local matched = false
		for _, r in ipairs(p.extra.match) do
			if
				(r.MXSuffix and utils.ends_with(h, r.MXSuffix:lower()))
				or (r.HostName and host_matches(h, r.HostName))
			then
				matched = true
				break
			end
		end
		if not matched then
			return false
		end
	end
	return true
end

-- The merged egress path settings for (domain, source, site).
function mod.resolve(data, c, domain, source, site)
	mod.update_sites(data, c)
	local params = {}
	local function add(opts)
		if opts then
			merge_opts(params, opts)
		end
	end
	local default = data.domains.default
	if default then
		add(default.opts)
	end
	for _, pname in ipairs(data.provider_order) do
		local p = data.providers[pname]
		if provider_matches(p, domain) then
			add(p.opts)
			for key, to in pairs(PROVIDER_LIMITS) do
				local v = p.extra[key]
				if v ~= nil then
					params[to.key] = params[to.key] or {}
					params[to.key][string.format("shaping-provider-%s-%s-%s", pname, source, to.suffix)] = v
				end
			end
			add(p.sources[source])
		end
	end
	local sb = site and c.sites[site]
	if sb then
		add(sb.opts)
	end
	local d = c.map[domain]
	if d then
		add(d.opts)
	end
	if default then
		add(default.sources[source])
	end
	if sb then
		add(sb.sources[source])
	end
	if d then
		add(d.sources[source])
	end
	return params
end

-- Automation: the rules a delivery record matches ------------------------

-- KumoMTA's one-line form of a response: "421 4.7.28 text".
local function response_line(resp)
	if type(resp) ~= "table" then
		return "", false
	end
	local content = tostring(resp.content or ""):gsub("\r?\n", " ")
	local e = resp.enhanced_code
	local enh = ""
	if type(e) == "table" and e.class then
		enh = string.format("%s.%s.%s ", tostring(e.class), tostring(e.subject), tostring(e.detail))
	end
	return string.format("%s %s%s", tostring(resp.code or ""), enh, content), content:sub(1, 18) == "KumoMTA internal: "
end

local function rule_matches(c, rule, is_internal, line)
	if is_internal and not rule.match_internal then
		return false
	end
	for _, p in ipairs(rule.regex) do
		local re = c.regex[p]
		if not re then
			re = kumo.regex.compile(p)
			c.regex[p] = re
		end
		if re:is_match(line) then
			return true
		end
	end
	return false
end

-- The parts of a record automation needs: recipient domain, source, site
-- name (the ready queue's, "source->site@proto" without its decoration),
-- tenant and campaign (from the queue name "campaign:tenant@domain").
function mod.record_scope(record)
	local rcpt = record.recipient
	if type(rcpt) == "table" then
		rcpt = rcpt[1]
	end
	if type(rcpt) ~= "string" then
		return nil
	end
	local domain = rcpt:match("@([^@]+)$")
	if not domain then
		return nil -- postmaster, as KumoMTA: no automation
	end
	domain = domain:gsub("^%[", ""):gsub("%]$", ""):lower()
	local source = record.egress_source or "unspecified"
	local rq = record.site or ""
	local site = rq
	if site:sub(1, #source + 2) == source .. "->" then
		site = site:sub(#source + 3)
	end
	site = site:gsub("@[^@]*$", "")
	local tenant, campaign
	local q = tostring(record.queue or "")
	local left = q:match("^(.*)@[^@]*$")
	if left then
		campaign, tenant = left:match("^(.*):(.*)$")
		if not campaign then
			tenant = left
		end
	end
	return {
		domain = domain,
		source = source,
		site = site,
		ready_queue = rq,
		tenant = tenant ~= "" and tenant or nil,
		campaign = campaign ~= "" and campaign or nil,
	}
end

-- KumoMTA's order: `default` (as rollup), matching providers, the site's
-- rolled-up blocks, the domain's own block. Returns a list of {rule,
-- rollup}.
function mod.match_rules(data, c, record, scope)
	local out = {}
	if not c.has_rules then
		return out
	end
	local line, is_internal = response_line(record.response)
	local function consider(rules, rollup)
		for _, r in ipairs(rules or {}) do
			if rule_matches(c, r, is_internal, line) then
				table.insert(out, { rule = r, rollup = rollup })
			end
		end
	end
	local default = data.domains.default
	if default then
		consider(default.automation, true)
	end
	for _, pname in ipairs(data.provider_order) do
		local p = data.providers[pname]
		if #p.automation > 0 and provider_matches(p, scope.domain) then
			consider(p.automation, false)
		end
	end
	mod.update_sites(data, c)
	local sb = c.sites[scope.site]
	if sb then
		consider(sb.automation, true)
	end
	local d = c.map[scope.domain]
	if d and not (sb and c.members[scope.site][scope.domain]) then
		consider(d.automation, false)
	end
	return out
end

-- kumo.shaping.load(files, validation_options) -------------------------

-- KumoMTA's location of its shipped default shaping.toml: kumod's own
-- shipped default stands in for it when that file is absent.
local KUMOMTA_DEFAULT = "/opt/kumomta/share/policy-extras/shaping.toml"

local LEVELS = { ignore = "Ignore", warn = "Warn", error = "Error" }

local VALIDATION_OPTIONS = {
	provider_overlap = "level",
	dns_fail = "level",
	null_mx = "level",
	aliased_site = "level",
	remote_load = "level",
	local_load = "level",
	skip_remote = "boolean",
	http_timeout = "duration",
}

local function check_options(o)
	local opts = { local_load = "Error", skip_remote = false }
	if o == nil then
		return opts
	end
	if type(o) ~= "table" then
		fail("kumo.shaping.load: validation options must be a table")
	end
	for k, v in pairs(o) do
		local kind = VALIDATION_OPTIONS[k]
		if not kind then
			fail("kumo.shaping.load: unknown validation option '%s'", tostring(k))
		elseif kind == "level" then
			local l = type(v) == "string" and LEVELS[v:lower()]
			if not l then
				fail("kumo.shaping.load: %s: expected one of 'Ignore', 'Warn' or 'Error', got '%s'", k, tostring(v))
			end
			opts[k] = l
		elseif kind == "boolean" then
			if type(v) ~= "boolean" then
				fail("kumo.shaping.load: %s must be a boolean", k)
			end
			opts[k] = v
		elseif type(v) ~= "string" and type(v) ~= "number" then
			fail("kumo.shaping.load: %s must be a duration", k)
		end
	end
	return opts
end

local function file_list(files)
	if type(files) ~= "table" then
		fail("kumo.shaping.load: expected a list of file names")
	end
	local out = {}
	for i, f in ipairs(files) do
		if type(f) ~= "string" then
			fail("kumo.shaping.load: file %d: expected a file name (string)", i)
		end
		table.insert(out, f)
	end
	return out
end

local function exists(f)
	local h = io.open(f, "r")
	if h then
		h:close()
	end
	return h ~= nil
end

local function append(list, v)
	local out = {}
	for _, x in ipairs(list) do
		table.insert(out, x)
	end
	table.insert(out, v)
	return out
end

-- KumoMTA's methods of the loaded object that kumod lacks.
local KUMOMTA_METHODS = { hash = true }

local Shaping = {}

-- The egress path settings for (domain, source, site_name). Refuses while
-- the data has errors (fail closed).
function Shaping:get_egress_path_config(domain, egress_source, site_name)
	if type(domain) ~= "string" or type(egress_source) ~= "string" then
		error(
			"shaping:get_egress_path_config(domain, egress_source, site_name): domain and egress_source must be strings",
			2
		)
	end
	if #self._errors > 0 then
		error("shaping:get_egress_path_config: the shaping data has errors: " .. self._errors[1], 2)
	end
	return mod.resolve(self._data, self._map, domain, egress_source, site_name)
end

function Shaping:get_errors()
	return helpers.deep_copy(self._errors)
end

function Shaping:get_warnings()
	return helpers.deep_copy(self._warnings)
end

-- source name -> list of "domain:<name>" (and "provider:<name>") that
-- name it in a sources table.
function Shaping:get_referenced_sources()
	local out = {}
	local function add(source, ref)
		out[source] = out[source] or {}
		table.insert(out[source], ref)
	end
	local names = utils.table_keys(self._data.domains)
	table.sort(names)
	for _, name in ipairs(names) do
		for s in pairs(self._data.domains[name].sources) do
			add(s, "domain:" .. name)
		end
	end
	for _, pname in ipairs(self._data.provider_order) do
		for s in pairs(self._data.providers[pname].sources) do
			add(s, "provider:" .. pname)
		end
	end
	return out
end

-- The automation rules a log record (a table as log hooks see it)
-- matches, in KumoMTA's form: regex, action, trigger, duration (seconds),
-- was_rollup, match_internal.
function Shaping:match_rules(record)
	if type(record) ~= "table" then
		error("shaping:match_rules(record): record must be a log record table", 2)
	end
	local scope = mod.record_scope(record)
	if not scope then
		return {}
	end
	local out = {}
	for _, m in ipairs(mod.match_rules(self._data, self._map, record, scope)) do
		local actions = {}
		for _, a in ipairs(m.rule.action) do
			if a.name then
				table.insert(actions, { [a.kind] = { name = a.name, value = a.value } })
			else
				table.insert(actions, a.kind)
			end
		end
		table.insert(out, {
			regex = helpers.deep_copy(m.rule.regex),
			action = actions,
			trigger = m.rule.threshold and { Threshold = m.rule.threshold } or "Immediate",
			duration = m.rule.duration,
			was_rollup = m.rollup,
			match_internal = m.rule.match_internal,
		})
	end
	return out
end

local SHAPING_MT = {
	__name = "kumo.shaping",
	__index = function(_, k)
		local m = Shaping[k]
		if m then
			return m
		end
		if KUMOMTA_METHODS[k] then
			error(string.format("shaping:%s() is a KumoMTA method that kumod does not implement yet", k), 2)
		end
		error(string.format("shaping:%s: unknown method (not a KumoMTA or kumod API)", tostring(k)), 2)
	end,
}

function mod.load(files, validation_options)
	local opts = check_options(validation_options)
	local errors, warnings = {}, {}
	local function report(level, msg)
		if level == "Error" then
			table.insert(errors, msg)
		elseif level == "Warn" then
			table.insert(warnings, msg)
		end
	end
	local locals = {}
	for _, f in ipairs(file_list(files)) do
		if f:find("^https?://") then
			if not opts.skip_remote then
				-- not the remote_load level: kumod cannot load it at all
				table.insert(
					errors,
					string.format("%s: loading shaping data over HTTP is not implemented by kumod yet", f)
				)
			end
		else
			if f == KUMOMTA_DEFAULT and not exists(f) then
				f = mod.default_file()
			end
			table.insert(locals, f)
		end
	end
	local all_ok, data = pcall(mod.load_data, locals)
	if not all_ok then
		-- each file on top of the good ones so far: a bad file is left out
		-- whole, never half merged
		local good = {}
		for _, f in ipairs(locals) do
			local ok, err = pcall(mod.load_data, append(good, f))
			if ok then
				good = append(good, f)
			else
				report(opts.local_load, tostring(err))
			end
		end
		data = mod.load_data(good)
	end
	return setmetatable({
		_data = data,
		_map = mod.compile(data),
		_errors = errors,
		_warnings = warnings,
	}, SHAPING_MT)
end

return mod
