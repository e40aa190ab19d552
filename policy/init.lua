-- SPDX-License-Identifier: Apache-2.0
-- kumod's default policy when neither --policy nor KUMO_POLICY is given: an
-- ESMTP listener on 127.0.0.1:2025 that relays for loopback clients. It
-- defines no spool, so mail for a real queue is refused with
-- `451 4.3.0 no spool is defined`; `make run` uses policy/simple_policy.lua
-- (spool, logs, delivery to the sink). See docs/policy-api.md.
local kumo = require("kumo")

kumo.on("init", function()
	kumo.start_esmtp_listener({
		listen = os.getenv("KUMO_LISTEN") or "127.0.0.1:2025",
		hostname = "localhost",
		relay_hosts = { "127.0.0.1", "::1" },
	})
	kumo.log_info("policy loaded; listening for SMTP")
end)

kumo.on("smtp_server_message_received", function(msg)
	-- Route by the X-Tenant header when present (KumoMTA convention).
	local tenant = msg:get_first_named_header_value("X-Tenant")
	if tenant then
		msg:set_meta("tenant", tenant)
		msg:remove_all_named_headers("X-Tenant")
	end
	kumo.log_debug("received", msg:id(), "from", tostring(msg:sender()))
end)
