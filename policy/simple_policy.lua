-- SPDX-License-Identifier: Apache-2.0
-- A readable developer policy (what `make run` uses):
--   * an ESMTP listener on 127.0.0.1:2025 relaying for loopback clients,
--   * spools and log records under ./var/ (created on start),
--   * every message routed by mx_list to the sink on 127.0.0.1:2026,
--     so nothing ever leaves this machine.
-- Run it by hand:
--   build/kumod --policy sink/sink.lua &            # the sink on :2026
--   KUMOD_LOG=kumod=trace build/kumod --policy policy/simple_policy.lua
--   swaks --server 127.0.0.1:2025 --to someone@example.com
-- Environment (optional): KUMO_VAR (default ./var), KUMO_LISTEN (default
-- 127.0.0.1:2025), KUMO_SINK (default 127.0.0.1:2026).
local kumo = require("kumo")

local var = os.getenv("KUMO_VAR") or "./var"
local listen = os.getenv("KUMO_LISTEN") or "127.0.0.1:2025"
local sink = os.getenv("KUMO_SINK") or "127.0.0.1:2026"

kumo.on("init", function()
	-- Both spools are required. flush = true (our default) means the 250
	-- after DATA is sent only once the message is on disk (fsync).
	kumo.define_spool({ name = "data", path = var .. "/spool/data", flush = true })
	kumo.define_spool({ name = "meta", path = var .. "/spool/meta", flush = true })

	-- One JSON line per event (Reception, Delivery, TransientFailure, ...),
	-- zstd-compressed segments: read them with `build/kcli logs | jq` (it also
	-- reads the segment still being written, where zstdcat stops with an error).
	kumo.configure_local_logs({
		log_dir = var .. "/logs",
		max_segment_duration = "10s",
		headers = { "Subject", "Message-Id" },
	})

	kumo.start_esmtp_listener({
		listen = listen,
		hostname = "localhost",
		relay_hosts = { "127.0.0.1", "::1" },
	})
end)

kumo.on("smtp_server_message_received", function(msg)
	-- Route by the X-Tenant header when present (KumoMTA convention).
	local tenant = msg:get_first_named_header_value("X-Tenant")
	if tenant then
		msg:set_meta("tenant", tenant)
		msg:remove_all_named_headers("X-Tenant")
	end
end)

-- Scheduled-queue configuration: short retries for development.
-- For real delivery, drop `protocol` and kumod resolves the domain's MX.
kumo.on("get_queue_config", function(domain, tenant, campaign, routing_domain)
	return kumo.make_queue_config({
		retry_interval = "1m",
		max_retry_interval = "10m",
		max_age = "1h",
		protocol = { smtp = { mx_list = { sink } } },
	})
end)

-- Ready-queue shaping. Loopback is a prohibited destination by default
-- (KumoMTA's prohibited_hosts); the sink lives there, so clear it.
-- The sink offers STARTTLS with a self-signed certificate, which the default
-- 'Opportunistic' would refuse to trust: use TLS without verifying it. For
-- real MX delivery keep 'Opportunistic' (verified) or 'Required'.
kumo.on("get_egress_path_config", function(routing_domain, egress_source, site_name)
	return kumo.make_egress_path({
		connection_limit = 8,
		enable_tls = "OpportunisticInsecure",
		prohibited_hosts = {},
	})
end)
