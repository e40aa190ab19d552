-- kumod's policy-extras.listener_domains: per-domain relay and report
-- settings from listener_domains.toml, following KumoMTA's documented file
-- format. setup returns the get_listener_domain handler. Written for kumod
-- (see docs/policy-extras.md); not derived from KumoMTA's source.
--
--   kumo.on('get_listener_domain',
--     require('policy-extras.listener_domains'):setup { '/etc/kumo/listener_domains.toml' })
local kumo = require("kumo")
local utils = require("policy-extras.policy_utils")
local helpers = require("policy-extras.kumod_helpers")

local mod = {}

local function check_entry(params, where)
	if type(params) ~= "table" then
		error(where .. ": expected a table", 0)
	end
	local opts = {}
	for k, v in pairs(params) do
		if k == "relay_from_authz" then
			if type(v) ~= "table" then
				error(where .. ": relay_from_authz must be a list of strings", 0)
			end
			for _, id in ipairs(v) do
				if type(id) ~= "string" then
					error(where .. ": relay_from_authz must be a list of strings", 0)
				end
			end
		else
			opts[k] = v
		end
	end
	local ok, err = pcall(kumo.make_listener_domain, helpers.deep_copy(opts))
	if not ok then
		error(string.format("%s: %s", where, tostring(err)), 0)
	end
end

local function load_data(files)
	local by_listener = {}
	for _, f in ipairs(files) do
		local data, src = helpers.load_data_file(f, "listener_domains helper")
		local function add(listener, domain, params, where)
			check_entry(params, where)
			by_listener[listener] = by_listener[listener] or {}
			local entry = by_listener[listener][domain] or {}
			utils.merge_into(params, entry)
			by_listener[listener][domain] = entry
		end
		for domain, params in pairs(data) do
			if domain == "listener" then
				if type(params) ~= "table" then
					error(string.format("listener_domains helper: %s: [listener] must be a table", src), 0)
				end
				for listener, domains in pairs(params) do
					for d, p in pairs(domains) do
						add(
							listener,
							d,
							p,
							string.format("listener_domains helper: %s: [listener.'%s'.'%s']", src, listener, d)
						)
					end
				end
			else
				add("*", domain, params, string.format("listener_domains helper: %s: ['%s']", src, domain))
			end
		end
	end
	return { listeners = by_listener }
end

-- Per listener ('*' for the global blocks), its blocks by domain.
local function compile(data)
	local maps = {}
	for listener, entries in pairs(data.listeners) do
		maps[listener] = kumo.domain_map.new(entries)
	end
	return maps
end

local function lookup(maps, listener, domain, conn_meta)
	local map = maps[listener]
	local entry = map and map[domain]
	if not entry then
		return nil
	end
	local params = {}
	for k, v in pairs(entry) do
		if k ~= "relay_from_authz" then
			params[k] = helpers.deep_copy(v)
		end
	end
	if entry.relay_from_authz and conn_meta then
		local authz = conn_meta:get_meta("authz_id")
		if authz and utils.table_contains(entry.relay_from_authz, authz) then
			local peer = utils.split_ip_port(conn_meta:get_meta("received_from"))
			params.relay_from = { peer }
		end
	end
	return kumo.make_listener_domain(params)
end

function mod:setup(data_files)
	if mod.CONFIGURED then
		error("listener_domains module has already been configured", 2)
	end
	local files = helpers.check_file_list(data_files, "listener_domains helper")
	local get_data = helpers.memoized_data(load_data, files, {
		name = "listener_domains_data",
		ttl = "5 minutes",
		capacity = 10,
		invalidate_with_epoch = true,
	}, compile)
	mod.CONFIGURED = { data_files = files, get_data = get_data }

	return function(domain, listener, conn_meta)
		local _, maps = get_data()
		return lookup(maps, listener, domain, conn_meta)
			or lookup(maps, "*", domain, conn_meta)
			or lookup(maps, "*", "*", conn_meta)
	end
end

return mod
