-- SPDX-License-Identifier: Apache-2.0
-- kumod's policy-extras.sources: egress sources and weighted pools from
-- TOML or JSON files, written for kumod from KumoMTA's documented format:
--
--   [source."ip-1"]                      -- kumo.make_egress_source options
--   source_address = "10.0.0.1"
--   ehlo_domain = "mta1.example.com"
--
--   [pool."BestReputation"."ip-1"]       -- a pool entry; weight defaults to 1
--   weight = 2
--
-- Usage: require('policy-extras.sources'):setup({ '/path/sources.toml' })
-- Each item of the list is a file path (.toml: TOML, else JSON) or an
-- inline table of the same shape; later items merge over earlier ones. The
-- data is memoized (cache 'sources_data', 5 minutes); setup registers the
-- get_egress_source, get_egress_pool and validate_config handlers.
local kumo = require("kumo")
local utils = require("policy-extras.policy_utils")

local mod = {}

local function load_data(data_files)
	local result = { sources = {}, pools = {} }
	utils.each_data_item(data_files, function(where, data)
		for key, value in pairs(data) do
			if key ~= "source" and key ~= "pool" then
				error(string.format("sources: %s: unknown section '%s' (expected source, pool)", where, key))
			end
			if type(value) ~= "table" then
				error(string.format("sources: %s: '%s' must be a table", where, key))
			end
		end
		for name, params in pairs(data.source or {}) do
			local source = result.sources[name] or { name = name }
			utils.merge_into(params, source)
			result.sources[name] = source
		end
		for name, members in pairs(data.pool or {}) do
			local pool = result.pools[name] or { name = name, entries = {} }
			for source_name, params in pairs(members) do
				local entry = nil
				for _, e in ipairs(pool.entries) do
					if e.name == source_name then
						entry = e
					end
				end
				if not entry then
					entry = { name = source_name }
					table.insert(pool.entries, entry)
				end
				utils.merge_into(params, entry)
			end
			-- a stable order: the files' order is lost in their tables
			table.sort(pool.entries, function(a, b)
				return a.name < b.name
			end)
			result.pools[name] = pool
		end
	end)
	return result
end

function mod:setup(data_files)
	if mod.CONFIGURED then
		error("sources module has already been configured")
	end
	local cached_load_data = kumo.memoize(load_data, { name = "sources_data", ttl = "5 minutes", capacity = 10 })
	mod.CONFIGURED = {
		data_files = data_files,
		get_data = function()
			return cached_load_data(data_files)
		end,
	}

	kumo.on("get_egress_source", function(source_name)
		local params = cached_load_data(data_files).sources[source_name]
		if not params then
			error(string.format("sources: egress source '%s' is not defined", source_name))
		end
		return kumo.make_egress_source(params)
	end)

	kumo.on("get_egress_pool", function(pool_name)
		local params = cached_load_data(data_files).pools[pool_name]
		if not params then
			error(string.format("sources: egress pool '%s' is not defined", pool_name))
		end
		return kumo.make_egress_pool(params)
	end)
end

kumo.on("validate_config", function()
	if not mod.CONFIGURED then
		return
	end
	local data = mod.CONFIGURED.get_data()
	local function problem(fmt, ...)
		kumo.log_error(string.format("sources: " .. fmt, ...))
		kumo.validation_failed()
	end
	for name, params in pairs(data.sources) do
		local ok, err = pcall(kumo.make_egress_source, params)
		if not ok then
			problem("egress source '%s': %s", name, tostring(err))
		end
	end
	for name, pool in pairs(data.pools) do
		for _, entry in ipairs(pool.entries) do
			if not data.sources[entry.name] then
				problem("egress pool '%s' uses source '%s', which is not defined", name, entry.name)
			end
		end
		local ok, err = pcall(kumo.make_egress_pool, pool)
		if not ok then
			problem("egress pool '%s': %s", name, tostring(err))
		end
	end
end)

return mod
