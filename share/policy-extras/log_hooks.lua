-- kumod's policy-extras.log_hooks: log records delivered to your own
-- services through log hooks and custom_lua queues, following KumoMTA's
-- documented helper (docs/events-out.md). Written for kumod; not derived
-- from KumoMTA's source.
--
--   local log_hooks = require 'policy-extras.log_hooks'
--   log_hooks:new_json { name = 'webhook', url = 'http://127.0.0.1:4242/log' }
--
-- new{ name, constructor, log_parameters, queue_config, filter } registers,
-- at the top level of the policy: a pre_init handler calling
-- kumo.configure_log_hook{ name, <log_parameters> }; a
-- should_enqueue_log_record handler that takes the records of that hook
-- (not those of LogRecord messages: no loops; nor those filter(msg)
-- returns true for) into the queue '<name>.log_hook'; a get_queue_config
-- handler for that queue (retry_interval '1m', max_retry_interval '20m',
-- overridden by queue_config) delivering through the custom_lua constructor
-- 'make.<name>.log_hook', which is `constructor`.
local kumo = require("kumo")

local mod = {}

local BATCH_KEYS = { batch_size = true, min_batch_size = true, max_batch_latency = true }

local function check_params(params, what, known)
	if type(params) ~= "table" then
		error(what .. ": expected a table", 2)
	end
	for k, v in pairs(params) do
		if BATCH_KEYS[k] and v ~= 1 then
			error(what .. ": " .. k .. " (batched hooks) is not implemented yet in kumod", 3)
		elseif not known[k] and not BATCH_KEYS[k] then
			error(what .. ": unknown key '" .. tostring(k) .. "'", 3)
		end
	end
	if type(params.name) ~= "string" or params.name == "" then
		error(what .. ": name is required", 3)
	end
end

local NEW_KEYS = { name = true, constructor = true, log_parameters = true, queue_config = true, filter = true }

function mod:new(params)
	check_params(params, "log_hooks:new", NEW_KEYS)
	if type(params.constructor) ~= "function" then
		error("log_hooks:new: constructor must be a function", 2)
	end
	local name = params.name
	local queue = name .. ".log_hook"
	local ctor = "make." .. name .. ".log_hook"

	kumo.on("pre_init", function()
		local p = { name = name }
		for k, v in pairs(params.log_parameters or {}) do
			p[k] = v
		end
		kumo.configure_log_hook(p)
	end)

	kumo.on("should_enqueue_log_record", function(msg, hook_name)
		if hook_name ~= name then
			return nil
		end
		local record = msg:get_meta("log_record")
		if record.reception_protocol == "LogRecord" then
			return false
		end
		if params.filter and params.filter(msg) then
			return false
		end
		msg:set_meta("queue", queue)
		return true
	end)

	kumo.on("get_queue_config", function(domain, tenant, campaign, routing_domain)
		if domain ~= queue then
			return nil
		end
		local cfg = { retry_interval = "1m", max_retry_interval = "20m" }
		for k, v in pairs(params.queue_config or {}) do
			cfg[k] = v
		end
		cfg.protocol = { custom_lua = { constructor = ctor } }
		return kumo.make_queue_config(cfg)
	end)

	kumo.on(ctor, params.constructor)
end

local JSON_KEYS = { name = true, url = true, log_parameters = true, queue_config = true, filter = true }

-- new_json{ name, url, log_parameters, queue_config }: each record is POSTed
-- as its JSON line with Content-Type application/json. A 2xx answer
-- delivers ("<code> <reason>: <body>" is logged). A 408, 429 or 5xx answer,
-- and no answer at all, are retried with the queue's backoff (kumod keeps
-- the record until the receiver recovers); any other answer is a permanent
-- failure (KumoMTA rejects every non-2xx permanently; kumod retries the
-- answers that say "try later").
function mod:new_json(params)
	check_params(params, "log_hooks:new_json", JSON_KEYS)
	if type(params.url) ~= "string" then
		error("log_hooks:new_json: url is required", 2)
	end
	local url = params.url
	mod:new({
		name = params.name,
		log_parameters = params.log_parameters,
		queue_config = params.queue_config,
		filter = params.filter,
		constructor = function(domain, tenant, campaign)
			local connection = {}
			local client = kumo.http.build_client({})
			function connection:send(message)
				local response =
					client:post(url):header("Content-Type", "application/json"):body(message:get_data()):send()
				local disposition =
					string.format("%d %s: %s", response:status_code(), response:status_reason() or "", response:text())
				if response:status_is_success() then
					return disposition
				end
				local code = response:status_code()
				if code == 408 or code == 429 or response:status_is_server_error() then
					kumo.reject(451, disposition)
				end
				kumo.reject(500, disposition)
			end
			function connection:close()
				client:close()
			end
			return connection
		end,
	})
end

return mod
