-- SPDX-License-Identifier: Apache-2.0
-- kumod's policy-extras.listener_domains: relaying decisions per domain from
-- TOML or JSON files, written for kumod from KumoMTA's documented format:
--
--   ["example.com"]                       -- any listener
--   relay_to = true
--   ["*.example.com"]                     -- kumo.domain_map wildcards
--   relay_from = [ "10.0.0.0/8" ]
--   [listener."127.0.0.1:2025"."example.net"]  -- one listener only
--   relay_to = true
--
-- Usage:
--   kumo.on('get_listener_domain',
--           require('policy-extras.listener_domains'):setup({ '/path/listener_domains.toml' }))
-- Each item of the list is a path (.toml: TOML, else JSON) or an inline
-- table; later items merge over earlier ones. A domain's options are
-- kumo.make_listener_domain's; a listener's own entry wins over the "any
-- listener" one. The compiled maps are memoized ('listener_domains_data',
-- 5 minutes). Options kumod cannot honour are refused by name:
-- relay_from_authz (kumod has no SMTP AUTH yet), and whatever
-- kumo.make_listener_domain refuses (log_oob, log_arf, ...).
local kumo = require("kumo")
local utils = require("policy-extras.policy_utils")

local mod = {}

local function check_params(where, listener, domain, params)
	if type(params) ~= "table" then
		error(string.format("listener_domains: %s: domain '%s' must be a table of options", where, domain))
	end
	if params.relay_from_authz ~= nil then
		error(
			string.format(
				"listener_domains: %s: domain '%s': relay_from_authz needs SMTP AUTH, which kumod does not have yet",
				where,
				domain
			)
		)
	end
	local ok, err = pcall(kumo.make_listener_domain, params)
	if not ok then
		error(
			string.format("listener_domains: %s: listener '%s' domain '%s': %s", where, listener, domain, tostring(err))
		)
	end
end

local function load_data(data_files)
	local by_listener = {}
	local function add(where, listener, domain, params)
		check_params(where, listener, domain, params)
		by_listener[listener] = by_listener[listener] or {}
		local entry = by_listener[listener][domain] or {}
		utils.merge_into(params, entry)
		by_listener[listener][domain] = entry
	end
	utils.each_data_item(data_files, function(where, data)
		for key, value in pairs(data) do
			if key == "listener" then
				for listener, domains in pairs(value) do
					for domain, params in pairs(domains) do
						add(where, listener, domain, params)
					end
				end
			else
				add(where, "*", key, value)
			end
		end
	end)
	local compiled = {}
	for listener, mapping in pairs(by_listener) do
		compiled[listener] = kumo.domain_map.new(mapping)
	end
	return compiled
end

function mod:setup(data_files)
	if mod.CONFIGURED then
		error("listener_domains module has already been configured")
	end
	local cached_load_data =
		kumo.memoize(load_data, { name = "listener_domains_data", ttl = "5 minutes", capacity = 10 })
	mod.CONFIGURED = {
		data_files = data_files,
		get_data = function()
			return cached_load_data(data_files)
		end,
	}
	return function(domain, listener, conn_meta)
		local by_listener = cached_load_data(data_files)
		for _, key in ipairs({ listener, "*" }) do
			local map = by_listener[key]
			local params = map and map[domain]
			if params then
				return kumo.make_listener_domain(params)
			end
		end
		return nil
	end
end

kumo.on("validate_config", function()
	if not mod.CONFIGURED then
		return
	end
	local ok, err = pcall(mod.CONFIGURED.get_data)
	if not ok then
		kumo.log_error(tostring(err))
		kumo.validation_failed()
	end
end)

return mod
