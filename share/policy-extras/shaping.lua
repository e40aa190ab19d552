-- kumod's policy-extras.shaping: egress path configuration (traffic
-- shaping) from shaping.toml files, following KumoMTA's documented file
-- format: a "default" block, per-domain blocks, per-source overrides and
-- providers matched by domain suffix. Written for kumod (see
-- docs/policy-extras.md); not derived from KumoMTA's source.
--
--   kumo.on('get_egress_path_config',
--     require('policy-extras.shaping'):setup { '/etc/kumo/shaping.toml' })
--
-- Not implemented yet, each a clear error naming the key: traffic shaping
-- automation (`automation` rules, `publish`/`subscribe`), MX rollup
-- (`mx_rollup = true`), provider rules that look at MX host names
-- (`MXSuffix`, `HostName`).
local kumo = require("kumo")
local utils = require("policy-extras.policy_utils")
local helpers = require("policy-extras.kumod_helpers")

local mod = {}

local function fail(fmt, ...)
	error(string.format(fmt, ...), 0)
end

-- The directory of this file: kumod's own default shaping.toml is next to
-- it (KumoMTA's /opt/kumomta/share/policy-extras/shaping.toml).
local function default_file()
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

local function load_data(files)
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
local function compile(data)
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
local function resolve(data, map, domain, source)
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

function mod:setup(extra_files)
	return self:setup_with_automation({ extra_files = extra_files }).get_egress_path_config
end

local OPTIONS = {
	extra_files = true,
	no_default_files = true,
	publish = true,
	subscribe = true,
	cache_ttl = true,
	skip_log_record_types = true,
	additional_skip_log_record_types = true,
	tsa_queue_config = true,
	load_validation_options = true,
	validation_options = true,
	pre_filter = true,
}

function mod:setup_with_automation(options)
	if mod.CONFIGURED then
		error("shaping module has already been configured", 2)
	end
	if type(options) ~= "table" then
		error("shaping helper: setup_with_automation expects a table", 2)
	end
	helpers.check_keys(options, OPTIONS, "shaping helper: setup_with_automation")
	for _, k in ipairs({ "publish", "subscribe" }) do
		if options[k] ~= nil and not utils.table_is_empty(options[k]) then
			fail("shaping helper: %s: traffic shaping automation (tsa-daemon) is not implemented by kumod yet", k)
		end
	end
	for _, k in ipairs({ "tsa_queue_config", "load_validation_options", "validation_options" }) do
		if options[k] ~= nil then
			fail("shaping helper: %s is not implemented by kumod yet", k)
		end
	end
	local files = {}
	if not options.no_default_files then
		table.insert(files, default_file())
	end
	for _, f in ipairs(helpers.check_file_list(options.extra_files or {}, "shaping helper: extra_files")) do
		table.insert(files, f)
	end

	local get_data = helpers.memoized_data(load_data, files, {
		name = "shaping_data",
		ttl = options.cache_ttl or "1 minute",
		capacity = 16,
		invalidate_with_epoch = true,
	}, compile)

	local function get_egress_path_config(domain, egress_source, _site_name, skip_make)
		local data, map = get_data()
		local params = resolve(data, map, domain, egress_source)
		if skip_make then
			return params
		end
		return kumo.make_egress_path(params)
	end

	mod.CONFIGURED = {
		files = files,
		get_data = get_data,
	}

	return {
		get_egress_path_config = get_egress_path_config,
		-- Nothing to publish without automation; kept so that policies calling
		-- it in init run.
		setup_publish = function() end,
		load_shaping_data = get_data,
	}
end

return mod
