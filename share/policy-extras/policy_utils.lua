-- kumod's policy-extras.policy_utils: small helpers shared by the
-- policy-extras modules, with the names and behaviour KumoMTA documents.
-- Written for kumod (see docs/policy-extras.md); not derived from KumoMTA's
-- source.
local kumo = require("kumo")

local mod = {}

-- Shallow merge: every key of src is assigned into dest.
function mod.merge_into(src, dest)
	for k, v in pairs(src or {}) do
		dest[k] = v
	end
	return dest
end

-- Deep merge: tables merge key by key (arrays by index), other values
-- replace.
function mod.recursive_merge_into(src, dest)
	for k, v in pairs(src or {}) do
		if type(v) == "table" and type(dest[k]) == "table" then
			mod.recursive_merge_into(v, dest[k])
		elseif type(v) == "table" then
			dest[k] = mod.recursive_merge_into(v, {})
		else
			dest[k] = v
		end
	end
	return dest
end

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

function mod.table_contains(tbl, value)
	for _, v in pairs(tbl or {}) do
		if v == value then
			return true
		end
	end
	return false
end

function mod.table_keys(tbl)
	local keys = {}
	for k in pairs(tbl or {}) do
		table.insert(keys, k)
	end
	return keys
end

function mod.table_is_empty(tbl)
	for _ in pairs(tbl or {}) do
		return false
	end
	return true
end

function mod.starts_with(s, prefix)
	return s:sub(1, #prefix) == prefix
end

function mod.ends_with(s, suffix)
	return suffix == "" or s:sub(-#suffix) == suffix
end

-- A table given inline is used as is; a path ending in .toml is TOML,
-- any other path JSON. A missing or malformed file raises naming it.
function mod.load_json_or_toml_file(file_name)
	if type(file_name) == "table" then
		return file_name
	end
	if type(file_name) ~= "string" then
		error(string.format("expected a file name or a table of data, got a %s", type(file_name)), 2)
	end
	if mod.ends_with(file_name, ".toml") then
		return kumo.toml_load(file_name)
	end
	return kumo.json_load(file_name)
end

-- "10.0.0.1:25" -> "10.0.0.1", "25"; "[::1]:25" -> "::1", "25";
-- "::1" -> "::1", nil.
function mod.split_ip_port(s)
	local ip, port = s:match("^%[(.*)%]:(%d+)$")
	if ip then
		return ip, port
	end
	ip = s:match("^%[(.*)%]$")
	if ip then
		return ip, nil
	end
	ip, port = s:match("^([^:]*):(%d+)$")
	if ip then
		return ip, port
	end
	return s, nil
end

-- Structural equality of two values (tables compared key by key).
function mod.equals(a, b)
	if type(a) ~= "table" or type(b) ~= "table" then
		return a == b
	end
	for k, v in pairs(a) do
		if not mod.equals(v, b[k]) then
			return false
		end
	end
	for k in pairs(b) do
		if a[k] == nil then
			return false
		end
	end
	return true
end

-- A readable rendering of a value (tables with sorted keys).
function mod.dumps(v, indent)
	indent = indent or ""
	if type(v) == "string" then
		return string.format("%q", v)
	end
	if type(v) ~= "table" then
		return tostring(v)
	end
	local keys = mod.table_keys(v)
	table.sort(keys, function(x, y)
		return tostring(x) < tostring(y)
	end)
	if #keys == 0 then
		return "{}"
	end
	local inner = indent .. "  "
	local parts = {}
	for _, k in ipairs(keys) do
		local key = type(k) == "string" and string.format("%q", k) or tostring(k)
		table.insert(parts, string.format("%s[%s] = %s", inner, key, mod.dumps(v[k], inner)))
	end
	return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

function mod.assert_eq(a, b, message)
	if not mod.equals(a, b) then
		error(
			string.format(
				"%sassertion failed: %s ~= %s",
				message and (message .. ": ") or "",
				mod.dumps(a),
				mod.dumps(b)
			),
			2
		)
	end
end

function mod.assert_ne(a, b, message)
	if mod.equals(a, b) then
		error(string.format("%sassertion failed: both are %s", message and (message .. ": ") or "", mod.dumps(a)), 2)
	end
end

function mod.assert_matches(s, pattern, message)
	if type(s) ~= "string" or not s:find(pattern) then
		error(
			string.format(
				"%sassertion failed: %s does not match %q",
				message and (message .. ": ") or "",
				mod.dumps(s),
				pattern
			),
			2
		)
	end
end

-- Shared by the other policy-extras modules ------------------------------

-- Raises naming the unknown key when `tbl` holds a key not in `known`.
function mod.check_keys(tbl, known, what)
	for k in pairs(tbl) do
		if not known[k] then
			local names = mod.table_keys(known)
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
	local ok, data = pcall(mod.load_json_or_toml_file, f)
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
