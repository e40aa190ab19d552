-- kumod's shaping data: loading and merging shaping.toml/JSON files (a
-- "default" block, per-domain blocks, per-source overrides, providers
-- matched by domain suffix) and resolving the egress path settings of a
-- (domain, source). Shared by kumod's policy-extras.shaping and by
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

-- Checks one block of egress path settings; returns {opts, sources,
-- replace_base}. `extra` lists additional keys allowed in this kind of
-- block.
local function parse_block(data, where, extra)
	if type(data) ~= "table" or is_array(data) then
		fail("%s: expected a table", where)
	end
	local b = { opts = {}, sources = {}, extra = {} }
	for k, v in pairs(data) do
		if k == "automation" then
			fail(
				"%s: automation rules (traffic shaping automation, tsa-daemon) are not implemented by kumod yet",
				where
			)
		elseif k == "mx_rollup" then
			if v == true then
				fail(
					"%s: mx_rollup = true (rolling up by MX site) is not implemented by kumod yet; set mx_rollup = false or leave it out (the block then applies to the domain named)",
					where
				)
			elseif v ~= false then
				fail("%s: mx_rollup must be a boolean", where)
			end
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
	if not is_array(rules) or #rules == 0 then
		fail("%s: match must be a non-empty list of rules", where)
	end
	for i, r in ipairs(rules) do
		local n = 0
		for k, v in pairs(r) do
			n = n + 1
			if k == "MXSuffix" or k == "HostName" then
				fail(
					"%s: match rule %d: %s needs the MX host names (kumo.dns.lookup_mx), which kumod does not implement yet; use DomainSuffix",
					where,
					i,
					k
				)
			elseif k ~= "DomainSuffix" then
				fail(
					"%s: match rule %d: unknown rule '%s' (expected DomainSuffix, MXSuffix or HostName)",
					where,
					i,
					tostring(k)
				)
			elseif type(v) ~= "string" then
				fail("%s: match rule %d: DomainSuffix must be a string", where, i)
			end
		end
		if n ~= 1 then
			fail("%s: match rule %d must have exactly one key", where, i)
		end
	end
end

function mod.load_data(files)
	local data = { domains = {}, providers = {}, provider_order = {} }
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
				data.domains[name] = merge_block(data.domains[name], parse_block(v, where, {}))
			end
		end
	end
	return data
end

-- The domain blocks by domain (exact, wildcard).
function mod.compile(data)
	local blocks = {}
	for name, b in pairs(data.domains) do
		if name ~= "default" then
			blocks[name] = b
		end
	end
	return kumo.domain_map.new(blocks)
end

local function provider_matches(p, domain)
	for _, r in ipairs(p.extra.match) do
		-- plain string suffix, as KumoMTA: '.big.test' does not match 'big.test'
		if r.DomainSuffix and utils.ends_with(domain, r.DomainSuffix) then
			return true
		end
	end
	return false
end

-- The merged egress path settings for (domain, source).
function mod.resolve(data, map, domain, source)
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
	local d = map[domain]
	if d then
		add(d.opts)
	end
	if default then
		add(default.sources[source])
	end
	if d then
		add(d.sources[source])
	end
	return params
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

-- The egress path settings for (domain, source); site_name is unused
-- (no MX rollup). Refuses while the data has errors (fail closed).
function Shaping:get_egress_path_config(domain, egress_source, _site_name)
	if type(domain) ~= "string" or type(egress_source) ~= "string" then
		error(
			"shaping:get_egress_path_config(domain, egress_source, site_name): domain and egress_source must be strings",
			2
		)
	end
	if #self._errors > 0 then
		error("shaping:get_egress_path_config: the shaping data has errors: " .. self._errors[1], 2)
	end
	return mod.resolve(self._data, self._map, domain, egress_source)
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

function Shaping:match_rules(_record)
	error(
		"shaping:match_rules(): automation rules (traffic shaping automation, tsa-daemon) are not implemented by kumod yet",
		2
	)
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
