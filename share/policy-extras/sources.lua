-- kumod's policy-extras.sources: egress sources and weighted pools from
-- sources.toml, following KumoMTA's documented file format. Registers
-- get_egress_source and get_egress_pool. Written for kumod (see
-- docs/policy-extras.md); not derived from KumoMTA's source.
--
--   require('policy-extras.sources'):setup { '/etc/kumo/sources.toml' }
local kumo = require("kumo")
local utils = require("policy-extras.policy_utils")
local helpers = require("policy-extras.kumod_helpers")

local mod = {}

local function load_file(f, target)
	local data, src = helpers.load_data_file(f, "sources helper")
	helpers.check_keys(data, { source = true, pool = true }, "sources helper: " .. src)
	for name, params in pairs(data.source or {}) do
		local where = string.format("sources helper: %s: [source.'%s']", src, name)
		if type(params) ~= "table" then
			error(where .. ": expected a table", 0)
		end
		local s = target.sources[name] or { name = name }
		utils.merge_into(params, s)
		s.name = name
		local good, err = pcall(kumo.make_egress_source, helpers.deep_copy(s))
		if not good then
			error(string.format("%s: %s", where, tostring(err)), 0)
		end
		target.sources[name] = s
	end
	for name, entries in pairs(data.pool or {}) do
		local where = string.format("sources helper: %s: [pool.'%s']", src, name)
		if type(entries) ~= "table" then
			error(where .. ": expected a table of sources", 0)
		end
		local p = target.pools[name] or { name = name, entries = {} }
		local names = utils.table_keys(entries)
		table.sort(names) -- a stable order for the round robin
		for _, sname in ipairs(names) do
			local e = entries[sname]
			if type(e) ~= "table" then
				error(string.format("%s: entry '%s' must be a table", where, sname), 0)
			end
			helpers.check_keys(e, { weight = true }, string.format("%s: [pool.'%s'.'%s']", src, name, sname))
			if e.weight ~= nil and (math.type(e.weight) ~= "integer" or e.weight < 0) then
				error(string.format("%s: source '%s': weight must be a non-negative integer", where, sname), 0)
			end
			table.insert(p.entries, { name = sname, weight = e.weight or 1 })
		end
		target.pools[name] = p
	end
end

local function load_data(files)
	local target = { sources = {}, pools = {} }
	for _, f in ipairs(files) do
		load_file(f, target)
	end
	for pname, p in pairs(target.pools) do
		for _, e in ipairs(p.entries) do
			if not target.sources[e.name] then
				error(
					string.format(
						"sources helper: pool '%s' references source '%s' which is not defined (files: %s)",
						pname,
						e.name,
						helpers.describe_files(files)
					),
					0
				)
			end
		end
	end
	return target
end

function mod:setup(data_files)
	if mod.CONFIGURED then
		error("sources module has already been configured", 2)
	end
	local files = helpers.check_file_list(data_files, "sources helper")
	local get_data = helpers.memoized_data(load_data, files, {
		name = "sources_data",
		ttl = "5 minutes",
		capacity = 10,
		invalidate_with_epoch = true,
	})
	mod.CONFIGURED = { data_files = files, get_data = get_data }

	kumo.on("get_egress_source", function(source_name)
		local params = get_data().sources[source_name]
		if not params then
			error(
				string.format(
					"sources helper: source '%s' is not defined in %s",
					source_name,
					helpers.describe_files(files)
				),
				0
			)
		end
		return kumo.make_egress_source(helpers.deep_copy(params))
	end)

	kumo.on("get_egress_pool", function(pool_name)
		local params = get_data().pools[pool_name]
		if not params then
			error(
				string.format(
					"sources helper: pool '%s' is not defined in %s",
					pool_name,
					helpers.describe_files(files)
				),
				0
			)
		end
		return kumo.make_egress_pool(helpers.deep_copy(params))
	end)
end

return mod
