-- kumod's policy-extras.shaping: egress path configuration (traffic
-- shaping) from shaping.toml files, following KumoMTA's documented file
-- format: a "default" block, per-domain blocks (rolled up by MX site
-- unless mx_rollup = false), per-source overrides, providers matched by
-- domain suffix or MX host names, and `automation` rules. Written for
-- kumod (see docs/policy-extras.md); not derived from KumoMTA's source.
--
--   kumo.on('get_egress_path_config',
--     require('policy-extras.shaping'):setup { '/etc/kumo/shaping.toml' })
--
-- Traffic shaping automation runs inside kumod (no tsa-daemon): the
-- delivery records of kumod itself reach the rules through a log
-- disposition hook, and a rule that fires suspends, bounces or overrides
-- path settings through kumod/dispatch/shaping_auto.c. `publish` and
-- `subscribe` may name a loopback TSA address only (served in-process);
-- any other address is refused by name.
local kumo = require("kumo")
local helpers = require("policy-extras.kumod_helpers")

local mod = {}

local core = require("policy-extras.kumod_shaping")

local function fail(fmt, ...)
	error(string.format(fmt, ...), 0)
end

-- The disposition hook (and its event) that feeds the automation rules.
local HOOK = "kumod_shaping_automation"

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
	back_pressure = true,
}

-- KumoMTA's default: records about reception and internal movement are
-- not for automation.
local UNINTERESTING = {
	"AdminRebind",
	"DeferredInjectionRebind",
	"Delayed",
	"Reception",
	"Rejection",
	"XferIn",
	"XferOut",
}

-- A TSA address kumod serves in-process: http(s) on a loopback host.
local function loopback_url(u)
	if type(u) ~= "string" then
		return false
	end
	local host = u:match("^https?://%[([^%]]+)%]") or u:match("^https?://([^:/]+)")
	return host == "127.0.0.1" or host == "::1" or host == "localhost"
end

local function check_tsa_list(options, k)
	local v = options[k]
	if v == nil then
		return
	end
	if type(v) ~= "table" then
		fail("shaping helper: %s must be a list of URLs", k)
	end
	for _, u in ipairs(v) do
		if not loopback_url(u) then
			fail(
				"shaping helper: %s: '%s': kumod runs traffic shaping automation in-process and does not talk to a tsa-daemon; only a loopback address (KumoMTA's default http://127.0.0.1:8008) is accepted, as a name for kumod itself",
				k,
				tostring(u)
			)
		end
	end
end

local function type_set(list, what)
	if type(list) ~= "table" then
		fail("shaping helper: %s must be a list of record types", what)
	end
	local out = {}
	for _, t in ipairs(list) do
		out[t] = true
	end
	return out
end

-- Enacts the rules a record matched.
local function enact(data, c, record)
	local scope = core.record_scope(record)
	if not scope then
		return
	end
	for _, m in ipairs(core.match_rules(data, c, record, scope)) do
		local rule = m.rule
		local fire = true
		if rule.threshold then
			-- counted per rule and scope: the site for rolled-up rules,
			-- the domain (and source) otherwise, as KumoMTA's TSA
			local key = string.format(
				"%s|%s|%s",
				rule.text,
				m.rollup and scope.ready_queue or (scope.source .. "|" .. scope.domain),
				rule.threshold
			)
			local count, limit = kumo.shaping.kumod_threshold(key, rule.threshold)
			fire = count >= limit
		end
		if fire then
			for _, a in ipairs(rule.action) do
				local ok, err = pcall(kumo.shaping.kumod_fire, {
					action = a.kind,
					rule = rule.text,
					duration = rule.duration,
					rollup = m.rollup,
					ready_queue = scope.ready_queue,
					source = scope.source,
					site = scope.site,
					domain = scope.domain,
					tenant = scope.tenant,
					campaign = scope.campaign,
					name = a.name,
					value = a.value,
				})
				if not ok then
					kumo.log_error(string.format("shaping automation: rule '%s': %s", rule.text, tostring(err)))
				end
			end
		end
	end
end

function mod:setup_with_automation(options)
	if mod.CONFIGURED then
		error("shaping module has already been configured", 2)
	end
	if type(options) ~= "table" then
		error("shaping helper: setup_with_automation expects a table", 2)
	end
	helpers.check_keys(options, OPTIONS, "shaping helper: setup_with_automation")
	check_tsa_list(options, "publish")
	check_tsa_list(options, "subscribe")
	for _, k in ipairs({ "tsa_queue_config", "load_validation_options", "validation_options" }) do
		if options[k] ~= nil then
			fail("shaping helper: %s is not implemented by kumod yet", k)
		end
	end
	local skip
	if options.skip_log_record_types ~= nil then
		skip = type_set(options.skip_log_record_types, "skip_log_record_types")
	else
		skip = type_set(UNINTERESTING, "")
	end
	for t in pairs(type_set(options.additional_skip_log_record_types or {}, "additional_skip_log_record_types")) do
		skip[t] = true
	end
	local files = {}
	if not options.no_default_files then
		table.insert(files, core.default_file())
	end
	for _, f in ipairs(helpers.check_file_list(options.extra_files or {}, "shaping helper: extra_files")) do
		table.insert(files, f)
	end

	local get_data = helpers.memoized_data(core.load_data, files, {
		name = "shaping_data",
		ttl = options.cache_ttl or "1 minute",
		capacity = 16,
		invalidate_with_epoch = true,
	}, core.compile)

	-- Every record kumod logs (but the skipped types) reaches the rules,
	-- as KumoMTA's publish hook sends them to the tsa-daemon. Installed at
	-- setup, whether or not setup_publish is called: rules are never
	-- silently ignored. kumo.on works only while the policy file loads:
	-- set up from inside a handler, data with rules is refused.
	local hooked = pcall(kumo.on, "log_disposition_" .. HOOK, function(_msg, record)
		local data, c = get_data()
		if c.has_rules then
			enact(data, c, record)
		end
	end)
	if hooked then
		local per_record = {}
		for t in pairs(skip) do
			per_record[t] = { enable = false }
		end
		kumo.configure_log_disposition_hook({ name = HOOK, per_record = per_record })
	end
	local function check_hooked(c)
		if c.has_rules and not hooked then
			fail(
				"shaping helper: the shaping data has automation rules, but setup_with_automation ran inside an event handler, where kumod cannot install the hook that feeds them; call it at the top of the policy file"
			)
		end
	end
	check_hooked(select(2, get_data()))

	local function get_egress_path_config(domain, egress_source, site_name, skip_make)
		local data, c = get_data()
		check_hooked(c)
		local params = core.resolve(data, c, domain, egress_source, site_name)
		-- live overrides of automation rules (SetConfig, SetDomainConfig)
		local over = kumo.shaping.kumod_overrides(domain, egress_source, site_name or "")
		if over then
			for k, v in pairs(over) do
				params[k] = v
			end
		end
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
		-- The hook is installed by setup_with_automation itself; kept so
		-- that policies calling it in init run.
		setup_publish = function() end,
		load_shaping_data = get_data,
	}
end

return mod
