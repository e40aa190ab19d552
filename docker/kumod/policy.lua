-- SPDX-License-Identifier: Apache-2.0
-- The container image's default policy (/config/policy.lua; mount your own
-- /config or set KUMO_POLICY to replace it). An ESMTP relay that spools to
-- the /var/spool/kumod volume, logs to /var/log/kumod, serves liveness and
-- metrics on KUMO_HTTP_LISTEN, and delivers every message to the smart host
-- KUMO_SMART_HOST (host:port). Without KUMO_SMART_HOST it refuses mail with
-- a 451 naming the variable: the image never delivers to the Internet under
-- its defaults. See docs/container.md.
local kumo = require("kumo")

local listen = os.getenv("KUMO_LISTEN") or "0.0.0.0:25"
local http_listen = os.getenv("KUMO_HTTP_LISTEN") or "127.0.0.1:8000"
local smart_host = os.getenv("KUMO_SMART_HOST")
local retry = os.getenv("KUMO_RETRY_INTERVAL") or "1m"
-- loopback and the private ranges container networks use
local relay_hosts = { "127.0.0.1", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16" }
if os.getenv("KUMO_RELAY_HOSTS") then
	relay_hosts = {}
	for cidr in string.gmatch(os.getenv("KUMO_RELAY_HOSTS"), "[^,%s]+") do
		table.insert(relay_hosts, cidr)
	end
end

kumo.on("init", function()
	kumo.define_spool({ name = "data", path = "/var/spool/kumod/data", flush = true })
	kumo.define_spool({ name = "meta", path = "/var/spool/kumod/meta", flush = true })
	kumo.configure_local_logs({
		log_dir = "/var/log/kumod",
		max_segment_duration = "10s",
		headers = { "Subject", "Message-Id" },
	})
	kumo.start_esmtp_listener({
		listen = listen,
		hostname = os.getenv("KUMO_HOSTNAME") or "localhost",
		relay_hosts = relay_hosts,
	})
	kumo.start_http_listener({ listen = http_listen })
	kumo.log_info("container policy loaded; smart host", smart_host or "(unset: mail refused)")
end)

kumo.on("smtp_server_message_received", function(msg)
	if not smart_host then
		kumo.reject(451, "4.3.0 no KUMO_SMART_HOST set for this container (see docs/container.md)")
	end
end)

kumo.on("get_queue_config", function(domain, tenant, campaign, routing_domain)
	return kumo.make_queue_config({
		retry_interval = retry,
		max_retry_interval = "10m",
		max_age = "1d",
		protocol = { smtp = { mx_list = { smart_host } } },
	})
end)

kumo.on("get_egress_path_config", function(routing_domain, egress_source, site_name)
	return kumo.make_egress_path({
		connection_limit = 8,
		enable_tls = "OpportunisticInsecure",
		prohibited_hosts = {},
	})
end)
