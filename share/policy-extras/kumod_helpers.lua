-- kumod's own helpers for its policy-extras modules (not a KumoMTA module:
-- a KumoMTA policy_utils.lua placed first on LUA_PATH does not replace it).
-- Written for kumod (see docs/policy-extras.md).
local kumo = require("kumo")
local utils = require("policy-extras.policy_utils")

local mod = {}

-- A plain copy of a table (also of a kumo.memoize view: pairs only).
function mod.deep_copy(v)
	if type(v) ~= "table" then
		return v
	end
	local out = {}
	for k, x in pairs(v) do
		out[k] = mod.deep_copy(x)
	end
	return out
end

-- Raises naming the unknown key when `tbl` holds a key not in `known`.
function mod.check_keys(tbl, known, what)
	for k in pairs(tbl) do
		if not known[k] then
			local names = utils.table_keys(known)
			table.sort(names)
			error(
				string.format(
					"%s: unknown key '%s' (expected one of: %s)",
					what,
					tostring(k),
					table.concat(names, ", ")
				),
				0
			)
		end
	end
end

-- The data of a list of files or inline tables, for messages.
function mod.describe_files(files)
	local out = {}
	for _, f in ipairs(files) do
		table.insert(out, type(f) == "table" and "(inline table)" or f)
	end
	return table.concat(out, ", ")
end

-- One data file (or inline table) of a helper: its data and its name for
-- messages; a load error is raised prefixed with `what`.
function mod.load_data_file(f, what)
	local src = type(f) == "table" and "(inline table)" or f
	local ok, data = pcall(function()
		return type(f) == "table" and f or utils.load_json_or_toml_file(f)
	end)
	if not ok then
		error(string.format("%s: %s", what, tostring(data)), 0)
	end
	return data, src
end

-- A helper's data: load(files) memoized with memo_params, loaded once now
-- so that a missing or malformed file fails the policy load. Returns the
-- getter, which answers the plain data and compile(data) (domain maps):
-- kept from the load while the memoized entry is that load's (lookups then
-- avoid the memoized view's indirection), copied from the view once when
-- another Lua state loaded it.
function mod.memoized_data(load, files, memo_params, compile)
	local current, seq = {}, 0
	local function keep(data, generation)
		current = { generation = generation, data = data, compiled = compile and compile(data) }
	end
	local cached = kumo.memoize(function(f)
		local data = load(f)
		seq = seq + 1
		data.generation = string.format("%s/%d/%d", tostring(data), seq, os.time())
		keep(data, data.generation)
		return data
	end, memo_params)
	cached(files)
	return function()
		local view = cached(files)
		if view.generation ~= current.generation then
			keep(mod.deep_copy(view), view.generation)
		end
		return current.data, current.compiled
	end
end

-- The list of files given to a setup function, checked.
function mod.check_file_list(files, what)
	if type(files) ~= "table" then
		error(string.format("%s: expected a list of file names, got a %s", what, type(files)), 0)
	end
	for i, f in ipairs(files) do
		if type(f) ~= "string" and type(f) ~= "table" then
			error(string.format("%s: entry %d is a %s, expected a file name or table", what, i, type(f)), 0)
		end
	end
	return files
end

return mod
