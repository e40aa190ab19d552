-- kumod's policy-extras.queue: queue configuration from queues.toml
-- (tenants, campaigns, per-domain settings, defaults, the tenant, campaign
-- and scheduling headers), following KumoMTA's documented file format and
-- behaviour. Written for kumod (see docs/policy-extras.md); not derived
-- from KumoMTA's source.
--
--   local queue_helper = require('policy-extras.queue'):setup { '/etc/kumo/queues.toml' }
--   kumo.on('smtp_server_message_received', function(msg) queue_helper:apply(msg) end)
local kumo = require("kumo")
local utils = require("policy-extras.policy_utils")
local helpers = require("policy-extras.kumod_helpers")

local mod = {}

local TOP_KEYS = {
	scheduling_header = "string",
	tenant_header = "string",
	remove_tenant_header = "boolean",
	campaign_header = "string",
	remove_campaign_header = "boolean",
	default_tenant = "string",
	tenant = "table",
	queue = "table",
}

local NOT_IMPLEMENTED = {
	overall_max_message_rate = "kumo.make_throttle and the throttle_insert_ready_queue event",
}

local function is_array(v)
	return type(v) == "table" and (#v > 0 or next(v) == nil)
end

-- Is {name = value} a make_queue_config option? Returns true, or false and
-- make_queue_config's error.
local function queue_option(name, value)
	local ok, err = pcall(kumo.make_queue_config, { [name] = value })
	if ok then
		return true
	end
	return false, tostring(err)
end

local function not_implemented(key, where)
	local needs = NOT_IMPLEMENTED[key]
	if needs then
		error(string.format("%s: %s needs %s, which kumod does not implement yet", where, key, needs), 0)
	end
end

-- One level of settings: queue config options plus routing_domain. Table
-- values that are not options go to `nested(name, value)` (tenants of a
-- domain, campaigns of a tenant) when given, else raise.
local function parse_level(data, where, nested)
	local level = { opts = {} }
	if type(data) ~= "table" then
		error(string.format("%s: expected a table, got a %s", where, type(data)), 0)
	end
	local rest = {}
	for k, v in pairs(data) do
		not_implemented(k, where)
		if k == "routing_domain" then
			if type(v) ~= "string" then
				error(string.format("%s: routing_domain must be a string", where), 0)
			end
			level.routing_domain = v
		else
			rest[k] = v
		end
	end
	-- Commonly every other key is an option: one check. Else key by key,
	-- to tell tenants (campaigns) from options and name a bad key.
	if pcall(kumo.make_queue_config, rest) then
		level.opts = rest
		return level
	end
	for k, v in pairs(rest) do
		local ok, err = queue_option(k, v)
		if ok then
			level.opts[k] = v
		elseif nested and type(v) == "table" and not is_array(v) then
			nested(k, v)
		else
			error(string.format("%s: %s", where, err), 0)
		end
	end
	-- the options must also be valid together
	local ok, err = pcall(kumo.make_queue_config, level.opts)
	if not ok then
		error(string.format("%s: %s", where, tostring(err)), 0)
	end
	return level
end

local function parse_file(data, src)
	if type(data) ~= "table" then
		error(string.format("%s: expected a table at the top level", src), 0)
	end
	for k, v in pairs(data) do
		local want = TOP_KEYS[k]
		if not want then
			local names = utils.table_keys(TOP_KEYS)
			table.sort(names)
			error(
				string.format("%s: unknown key '%s' (expected one of: %s)", src, tostring(k), table.concat(names, ", ")),
				0
			)
		end
		if type(v) ~= want then
			error(string.format("%s: %s must be a %s, got a %s", src, k, want, type(v)), 0)
		end
	end
	local out = { tenants = {}, queues = {} }
	for k, v in pairs(data) do
		if k ~= "tenant" and k ~= "queue" then
			out[k] = v
		end
	end
	for name, t in pairs(data.tenant or {}) do
		local where = string.format("%s: [tenant.'%s']", src, name)
		local tenant = { campaigns = {} }
		local rest = {}
		if type(t) ~= "table" then
			error(string.format("%s: expected a table", where), 0)
		end
		for k, v in pairs(t) do
			if k == "require_authz" then
				if not is_array(v) then
					error(string.format("%s: require_authz must be a list of strings", where), 0)
				end
				for _, id in ipairs(v) do
					if type(id) ~= "string" then
						error(string.format("%s: require_authz must be a list of strings", where), 0)
					end
				end
				tenant.require_authz = v
			elseif k == "campaigns" then
				for c, cv in pairs(v) do
					local cw = string.format("%s: [tenant.'%s'.campaigns.'%s']", src, name, c)
					for ck in pairs(cv) do
						not_implemented(ck, cw)
						error(string.format("%s: unknown key '%s'", cw, tostring(ck)), 0)
					end
					tenant.campaigns[c] = {}
				end
			else
				rest[k] = v
			end
		end
		local level = parse_level(rest, where)
		tenant.opts = level.opts
		tenant.routing_domain = level.routing_domain
		out.tenants[name] = tenant
	end
	for domain, q in pairs(data.queue or {}) do
		local where = string.format("%s: [queue.'%s']", src, domain)
		local tenants = {}
		local level = parse_level(q, where, function(tname, tv)
			local tw = string.format("%s: [queue.'%s'.'%s']", src, domain, tname)
			local campaigns = {}
			local tl = parse_level(tv, tw, function(cname, cv)
				campaigns[cname] =
					parse_level(cv, string.format("%s: [queue.'%s'.'%s'.'%s']", src, domain, tname, cname))
			end)
			tl.campaigns = campaigns
			tenants[tname] = tl
		end)
		level.tenants = tenants
		out.queues[domain] = level
	end
	return out
end

local function load_data(files)
	local merged = { tenants = {}, queues = {} }
	for i, f in ipairs(files) do
		local data, src = helpers.load_data_file(f, "queue helper")
		local parsed = parse_file(data, "queue helper: " .. src)
		if i == 1 then
			merged = parsed
		else
			utils.recursive_merge_into(parsed, merged)
		end
	end
	-- Fail closed: names must refer to declared tenants.
	if merged.default_tenant and not merged.tenants[merged.default_tenant] then
		error(
			string.format(
				"queue helper: default_tenant '%s' is not defined in [tenant] (files: %s)",
				merged.default_tenant,
				helpers.describe_files(files)
			),
			0
		)
	end
	for domain, q in pairs(merged.queues) do
		for tname in pairs(q.tenants) do
			if not merged.tenants[tname] then
				error(
					string.format(
						"queue helper: [queue.'%s'.'%s']: '%s' is neither a queue config option nor a tenant defined in [tenant] (files: %s)",
						domain,
						tname,
						tname,
						helpers.describe_files(files)
					),
					0
				)
			end
		end
	end
	return merged
end

-- [queue.'D'] entries by domain (exact, wildcard).
local function compile(data)
	return kumo.domain_map.new(data.queues)
end

local function add(params, opts)
	for k, v in pairs(opts or {}) do
		params[k] = helpers.deep_copy(v)
	end
end

-- Merged queue config options for (domain, tenant, campaign); the second
-- result is the routing_domain found on the way, if any.
local function resolve(data, map, domain, tenant, campaign)
	-- KumoMTA starts from refresh_strategy = 'Epoch'; kumod has no config
	-- epoch yet, so its queues refresh on refresh_interval (Ttl).
	local params = {}
	local routing_domain
	local function level(l)
		if l then
			add(params, l.opts)
			routing_domain = l.routing_domain or routing_domain
		end
	end
	level(data.queues.default)
	local d = domain and map[domain]
	level(d)
	local t = tenant and data.tenants[tenant]
	level(t)
	if d and tenant then
		local dt = d.tenants[tenant]
		level(dt)
		if dt and campaign then
			level(dt.campaigns[campaign])
		end
	end
	return params, routing_domain
end

local function apply_impl(msg, data, map)
	if data.scheduling_header then
		msg:import_scheduling_header(data.scheduling_header, true)
	end
	if data.campaign_header then
		local campaign = msg:get_first_named_header_value(data.campaign_header)
		if campaign then
			msg:set_meta("campaign", campaign)
			if data.remove_campaign_header then
				msg:remove_all_named_headers(data.campaign_header)
			end
		end
	end
	local tenant, source
	if data.tenant_header then
		tenant = msg:get_first_named_header_value(data.tenant_header)
		if tenant then
			source = string.format("'%s' header", data.tenant_header)
			if data.remove_tenant_header then
				msg:remove_all_named_headers(data.tenant_header)
			end
		end
	end
	if not tenant and data.default_tenant then
		tenant = data.default_tenant
		source = "default_tenant option"
	end
	if tenant then
		local t = data.tenants[tenant]
		if not t then
			kumo.reject(
				500,
				string.format("tenant '%s' specified by %s is not defined in your queue config", tenant, source)
			)
		end
		if t.require_authz then
			local authz = msg:get_meta("authz_id")
			if not authz then
				kumo.reject(500, string.format("tenant '%s' requires SMTP AUTH", tenant))
			end
			if not utils.table_contains(t.require_authz, authz) then
				kumo.reject(500, string.format("authz_id '%s' is not authorized to send as tenant '%s'", authz, tenant))
			end
		end
		msg:set_meta("tenant", tenant)
	end
	local recip = msg:recipient_list()[1]
	if recip then
		local _, routing_domain = resolve(data, map, recip.domain, msg:get_meta("tenant"), msg:get_meta("campaign"))
		if routing_domain then
			msg:set_meta("routing_domain", routing_domain)
		end
	end
end

-- KumoMTA derives the provider from the egress path configuration of the
-- domain's MX site; kumod cannot look MX records up from Lua yet.
function mod:resolve_provider(_domain, _routing_domain)
	error(
		"queue helper: resolve_provider needs kumo.dns.lookup_mx and kumo.invoke_get_egress_path_config, which kumod does not implement yet",
		2
	)
end

function mod:setup(file_names)
	return self:setup_with_options({ file_names = file_names })
end

function mod:setup_with_options(options)
	if mod.CONFIGURED then
		error("queues module has already been configured", 2)
	end
	if type(options) ~= "table" then
		error("queue helper: setup_with_options expects a table", 2)
	end
	helpers.check_keys(options, {
		file_names = true,
		skip_queue_config_hook = true,
		invalidate_with_epoch = true,
	}, "queue helper: setup_with_options")
	local files = helpers.check_file_list(options.file_names, "queue helper: file_names")

	local get_data = helpers.memoized_data(load_data, files, {
		name = "queue_helper_data",
		ttl = "1 minute",
		capacity = 10,
		invalidate_with_epoch = options.invalidate_with_epoch or false,
	}, compile)

	local helper = { file_names = files }

	function helper:resolve_config(domain, tenant, campaign)
		local data, map = get_data()
		local params = resolve(data, map, domain, tenant, campaign)
		return params
	end

	function helper:apply(msg)
		local data, map = get_data()
		apply_impl(msg, data, map)
	end

	mod.CONFIGURED = {
		options = options,
		get_data = get_data,
		resolve_config = helper.resolve_config,
	}

	if not options.skip_queue_config_hook then
		kumo.on("get_queue_config", function(domain, tenant, campaign, _routing_domain)
			local data, map = get_data()
			return kumo.make_queue_config((resolve(data, map, domain, tenant, campaign)))
		end)
	end

	return helper
end

-- Every egress_pool named in the queue data must exist in the sources
-- helper's data when that helper is set up.
kumo.on("validate_config", function()
	if not mod.CONFIGURED then
		return
	end
	local sources = package.loaded["policy-extras.sources"]
	if not (sources and sources.CONFIGURED) then
		return
	end
	local data = mod.CONFIGURED.get_data()
	local pools = sources.CONFIGURED.get_data().pools
	local function check(what, opts)
		local pool = opts and opts.egress_pool
		if pool and not pools[pool] then
			error(
				string.format(
					"queue helper: %s uses pool '%s' which is not present in your sources helper data",
					what,
					pool
				),
				0
			)
		end
	end
	for name, t in pairs(data.tenants) do
		check(string.format("tenant '%s'", name), t.opts)
	end
	for name, q in pairs(data.queues) do
		check(string.format("domain '%s'", name), q.opts)
	end
end)

return mod
