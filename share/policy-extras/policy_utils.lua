-- SPDX-License-Identifier: Apache-2.0
-- kumod's policy-extras.policy_utils: the small table and string helpers
-- KumoMTA's policy-extras modules share, written for kumod from their
-- documented behaviour (kumo-policy-surface.md section 2). Loaded by
-- `require 'policy-extras.policy_utils'` with no LUA_PATH (kumod's share
-- directory searcher); a module of the same name on LUA_PATH wins.
local kumo = require("kumo")

local mod = {}

-- Deep equality of two values (tables compared key by key; metatables
-- ignored unless compare_mt).
function mod.equals(a, b, compare_mt)
	if a == b then
		return true
	end
	if type(a) ~= "table" or type(b) ~= "table" then
		return false
	end
	if compare_mt and getmetatable(a) ~= getmetatable(b) then
		return false
	end
	for k, v in pairs(a) do
		if not mod.equals(v, b[k], compare_mt) then
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

local function fail(message, text)
	if message then
		text = message .. ". " .. text
	end
	error(text, 3)
end

function mod.assert_eq(a, b, message)
	if not mod.equals(a, b) then
		fail(message, string.format("expected\n %s\n to equal\n %s", mod.dumps(a), mod.dumps(b)))
	end
end

function mod.assert_ne(a, b, message)
	if mod.equals(a, b) then
		fail(message, string.format("expected\n %s\n not to equal\n %s", mod.dumps(a), mod.dumps(b)))
	end
end

-- a must match the regular expression pattern (kumo.regex syntax).
function mod.assert_matches(a, pattern, message)
	if not kumo.regex.compile(pattern):is_match(a) then
		fail(message, string.format('expected\n "%s"\n to match\n "%s"', a, pattern))
	end
end

-- Copies every key of src (when not nil) into dest, replacing.
function mod.merge_into(src, dest)
	for k, v in pairs(src or {}) do
		dest[k] = v
	end
end

-- As merge_into, but a table value merges into the table dest already
-- holds under that key (arrays therefore merge by index).
function mod.recursive_merge_into(src, dest)
	for k, v in pairs(src or {}) do
		if type(v) == "table" and type(dest[k]) == "table" then
			mod.recursive_merge_into(v, dest[k])
		else
			dest[k] = v
		end
	end
end

function mod.table_contains(tbl, value)
	for _, v in pairs(tbl) do
		if v == value then
			return true
		end
	end
	return false
end

function mod.table_keys(tbl)
	local keys = {}
	for k in pairs(tbl) do
		table.insert(keys, k)
	end
	return keys
end

function mod.table_is_empty(tbl)
	return next(tbl) == nil
end

-- A .toml file through kumo.toml_load, anything else through kumo.json_load.
function mod.load_json_or_toml_file(filename)
	if filename:sub(-5) == ".toml" then
		return kumo.toml_load(filename)
	end
	return kumo.json_load(filename)
end

function mod.starts_with(s, prefix)
	return s:sub(1, #prefix) == prefix
end

function mod.ends_with(s, suffix)
	return suffix == "" or s:sub(-#suffix) == suffix
end

-- "127.0.0.1:25" -> "127.0.0.1", "25"; "[::1]:25" -> "::1", "25".
-- Text without a ":port" gives nil.
function mod.split_ip_port(text)
	local ip, port = text:match("^(.*):(%d+)$")
	if not ip then
		return nil
	end
	return ip:match("^%[(.*)%]$") or ip, port
end

-- A readable, deterministic rendering of a value (keys sorted; cycles
-- shown as [recursive node]).
function mod.dumps(value)
	local seen = {}
	local function dump(v, indent)
		if type(v) ~= "table" then
			if type(v) == "string" then
				return string.format("%q", v)
			end
			return tostring(v)
		end
		if seen[v] then
			return "[recursive node]"
		end
		seen[v] = true
		local keys = mod.table_keys(v)
		table.sort(keys, function(x, y)
			return tostring(x) < tostring(y)
		end)
		local pad = string.rep(" ", indent)
		local lines = {}
		for _, k in ipairs(keys) do
			local key = type(k) == "string" and k or "[" .. tostring(k) .. "]"
			table.insert(lines, pad .. "  " .. key .. " = " .. dump(v[k], indent + 2) .. ",")
		end
		seen[v] = nil
		if #lines == 0 then
			return "{}"
		end
		return "{\n" .. table.concat(lines, "\n") .. "\n" .. pad .. "}"
	end
	return dump(value, 0)
end

return mod
