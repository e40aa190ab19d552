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
local helpers = require("policy-extras.kumod_helpers")

local mod = {}

local utils = require("policy-extras.policy_utils")
local core = require("policy-extras.kumod_shaping")

local function fail(fmt, ...)
	error(string.format(fmt, ...), 0)
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

	local function get_egress_path_config(domain, egress_source, _site_name, skip_make)
		local data, map = get_data()
		local params = core.resolve(data, map, domain, egress_source)
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
