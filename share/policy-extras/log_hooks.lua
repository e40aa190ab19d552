-- kumod's policy-extras.log_hooks: log records delivered to your own
-- services through log hooks and custom_lua queues, following KumoMTA's
-- documented helper (docs/events-out.md). Written for kumod; not derived
-- from KumoMTA's source.
--
--   local log_hooks = require 'policy-extras.log_hooks'
--   log_hooks:new_json { name = 'webhook', url = 'http://127.0.0.1:4242/log' }
--
-- new{ name, constructor, log_parameters, queue_config, filter, batch_size,
-- min_batch_size, max_batch_latency } registers, at the top level of the
-- policy: a pre_init handler calling kumo.configure_log_hook{ name,
-- <log_parameters> }; a should_enqueue_log_record handler that takes the
-- records of that hook (not those of LogRecord messages: no loops; nor
-- those filter(msg, hook_name) returns true for) into the queue
-- '<name>.log_hook'; a get_queue_config handler for that queue
-- (retry_interval '1m', max_retry_interval '20m', overridden by
-- queue_config) delivering through the custom_lua constructor
-- 'make.<name>.log_hook', which is `constructor`, with the batching keys
-- (batch_size > 1: the connection's send_batch(messages) is called instead
-- of send(message)).
--
-- new_disposition_hook{ name, hook } calls hook(msg, log_record) for every
-- record as it is emitted (kumo.configure_log_disposition_hook), before the
-- message can leave the spool: nothing is queued.
local kumo = require("kumo")

local mod = {}

local function check_params(params, what, known)
	if type(params) ~= "table" then
		error(what .. ": expected a table", 3)
	end
	for k, _ in pairs(params) do
		if not known[k] then
			error(what .. ": unknown key '" .. tostring(k) .. "'", 3)
		end
	end
	if type(params.name) ~= "string" or params.name == "" then
		error(what .. ": name is required", 3)
	end
	for _, k in ipairs({ "batch_size", "min_batch_size" }) do
		local v = params[k]
		if v ~= nil and (math.type(v) ~= "integer" or v < 1) then
			error(what .. ": " .. k .. " must be a positive integer", 3)
		end
	end
	if params.max_batch_latency ~= nil and type(params.max_batch_latency) ~= "string" then
		error(what .. ": max_batch_latency must be a duration string such as '5s'", 3)
	end
	if (params.min_batch_size or 1) > (params.batch_size or 1) then
		error(what .. ": min_batch_size is larger than batch_size", 3)
	end
end

-- only one helper per hook name (kumo.configure_log_hook refuses it too,
-- but later, at pre_init)
local configured = {}

local function claim(name, what)
	if configured[name] then
		error(what .. ": a log hook named '" .. name .. "' is already configured", 3)
	end
	configured[name] = true
end

local NEW_KEYS = {
	name = true,
	constructor = true,
	log_parameters = true,
	queue_config = true,
	filter = true,
	batch_size = true,
	min_batch_size = true,
	max_batch_latency = true,
}

function mod:new(params)
	check_params(params, "log_hooks:new", NEW_KEYS)
	if type(params.constructor) ~= "function" then
		error("log_hooks:new: constructor must be a function", 2)
	end
	claim(params.name, "log_hooks:new")
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
		if params.filter and params.filter(msg, hook_name) then
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
		cfg.protocol = {
			custom_lua = {
				constructor = ctor,
				batch_size = params.batch_size or 1,
				min_batch_size = params.min_batch_size,
				max_batch_latency = params.max_batch_latency,
			},
		}
		return kumo.make_queue_config(cfg)
	end)

	kumo.on(ctor, params.constructor)
end

local DISP_KEYS = { name = true, hook = true }

function mod:new_disposition_hook(params)
	check_params(params, "log_hooks:new_disposition_hook", DISP_KEYS)
	if type(params.hook) ~= "function" then
		error("log_hooks:new_disposition_hook: hook must be a function", 2)
	end
	claim(params.name, "log_hooks:new_disposition_hook")
	kumo.on("pre_init", function()
		kumo.configure_log_disposition_hook({ name = params.name })
	end)
	kumo.on("log_disposition_" .. params.name, params.hook)
end

local JSON_KEYS = {
	name = true,
	url = true,
	log_parameters = true,
	queue_config = true,
	filter = true,
	batch_size = true,
	min_batch_size = true,
	max_batch_latency = true,
}

-- POSTs body to url; the disposition text for a 2xx answer, else
-- kumo.reject (4xx: retried, 5xx: permanent).
local function post(client, url, body)
	local response = client:post(url):header("Content-Type", "application/json"):body(body):send()
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

-- new_json{ name, url, log_parameters, queue_config, filter, batch_size,
-- min_batch_size, max_batch_latency }: each record is POSTed as its JSON
-- line with Content-Type application/json; with batch_size > 1, a batch of
-- records is POSTed as one JSON array of their bodies (so per_record
-- templates must then render JSON values). A 2xx answer delivers
-- ("<code> <reason>: <body>" is logged). A 408, 429 or 5xx answer, and no
-- answer at all, are retried with the queue's backoff (kumod keeps the
-- record, or every record of the batch, until the receiver recovers); any
-- other answer is a permanent failure (KumoMTA rejects every non-2xx
-- permanently; kumod retries the answers that say "try later").
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
		batch_size = params.batch_size,
		min_batch_size = params.min_batch_size,
		max_batch_latency = params.max_batch_latency,
		constructor = function(domain, tenant, campaign)
			local connection = {}
			local client = kumo.http.build_client({})
			function connection:send(message)
				return post(client, url, message:get_data())
			end
			function connection:send_batch(messages)
				local bodies = {}
				for i, message in ipairs(messages) do
					bodies[i] = message:get_data()
				end
				return post(client, url, "[" .. table.concat(bodies, ",") .. "]")
			end
			function connection:close()
				client:close()
			end
			return connection
		end,
	})
end

return mod
