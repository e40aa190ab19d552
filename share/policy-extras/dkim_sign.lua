-- kumod's policy-extras.dkim_sign: DKIM signing from dkim_data.toml, the
-- file format of KumoMTA's documented helper. setup returns the function
-- that signs a message; call it last in smtp_server_message_received and
-- http_message_generated. Written for kumod (see docs/policy-extras.md and
-- docs/dkim.md); not derived from KumoMTA's source.
--
--   local sign = require('policy-extras.dkim_sign'):setup { '/etc/kumo/dkim_data.toml' }
--   kumo.on('smtp_server_message_received', function(msg) sign(msg) end)
--
-- [base] holds defaults; [domain."example.com"] (wildcards as domain_map)
-- signs mail whose From header domain matches; [signature."name"] blocks
-- listed in base.additional_signatures add signatures for other domains
-- (policy "Always", or "OnlyIfMissingDomainBlock" as a fallback). Keys
-- come from `filename`, else /opt/kumomta/etc/dkim/<domain>/<selector>.key.
local kumo = require("kumo")
local utils = require("policy-extras.policy_utils")
local helpers = require("policy-extras.kumod_helpers")

local mod = {}

local SIGNING_KEYS = {
	selector = true,
	headers = true,
	algo = true,
	expiration = true,
	filename = true,
	header_canonicalization = true,
	body_canonicalization = true,
	over_sign = true,
	policy = true,
}
local BASE_KEYS = {
	selector = true,
	headers = true,
	expiration = true,
	header_canonicalization = true,
	body_canonicalization = true,
	over_sign = true,
	policy = true,
	additional_signatures = true,
	vault_mount = true,
	vault_path_prefix = true,
	vault_key = true,
}

local function check_block(block, known, where)
	if type(block) ~= "table" then
		error(where .. ": expected a table", 0)
	end
	helpers.check_keys(block, known, where)
	for _, k in ipairs({ "vault_mount", "vault_path_prefix", "vault_key" }) do
		if block[k] ~= nil then
			error(
				where
					.. ": "
					.. k
					.. ": keys from HashiCorp Vault are a KumoMTA feature kumod does not implement yet; give filename",
				0
			)
		end
	end
	if block.algo ~= nil and block.algo ~= "sha256" and block.algo ~= "ed25519" then
		error(string.format("%s: algo must be 'sha256' or 'ed25519', got '%s'", where, tostring(block.algo)), 0)
	end
end

local function load_data(files)
	local data = { base = {}, domain = {}, signature = {} }
	for _, f in ipairs(files) do
		local d, src = helpers.load_data_file(f, "dkim_sign helper")
		helpers.check_keys(d, { base = true, domain = true, signature = true }, "dkim_sign helper: " .. src)
		check_block(d.base or {}, BASE_KEYS, "dkim_sign helper: " .. src .. ": [base]")
		utils.merge_into(d.base or {}, data.base)
		for name, block in pairs(d.domain or {}) do
			local where = string.format("dkim_sign helper: %s: [domain.'%s']", src, name)
			check_block(block, SIGNING_KEYS, where)
			if block.policy ~= nil and block.policy ~= "Always" then
				error(where .. ": policy must be 'Always'", 0)
			end
			data.domain[name] = data.domain[name] or {}
			utils.merge_into(block, data.domain[name])
		end
		for name, block in pairs(d.signature or {}) do
			local where = string.format("dkim_sign helper: %s: [signature.'%s']", src, name)
			local known = helpers.deep_copy(SIGNING_KEYS)
			known.domain = true
			check_block(block, known, where)
			local p = block.policy
			if p ~= nil and p ~= "Always" and p ~= "OnlyIfMissingDomainBlock" then
				error(where .. ": policy must be 'Always' or 'OnlyIfMissingDomainBlock'", 0)
			end
			data.signature[name] = data.signature[name] or {}
			utils.merge_into(block, data.signature[name])
		end
	end
	for _, name in ipairs(data.base.additional_signatures or {}) do
		if not data.signature[name] then
			error(
				string.format(
					"dkim_sign helper: base.additional_signatures lists '%s' but no [signature.'%s'] block defines it",
					name,
					name
				),
				0
			)
		end
		if type(data.signature[name].domain) ~= "string" then
			error(string.format("dkim_sign helper: [signature.'%s'] needs a domain", name), 0)
		end
	end
	for name, block in pairs(data.domain) do
		if not (block.selector or data.base.selector) then
			error(string.format("dkim_sign helper: [domain.'%s'] has no selector and [base] gives none", name), 0)
		end
	end
	return data
end

-- The domain of the From header ("Name <user@Example.COM>"), lower-cased.
local function from_domain(msg)
	local from = msg:get_first_named_header_value("From")
	if not from then
		return nil
	end
	local addr = from:match("<([^<>]*)>%s*$") or from
	local domain = addr:match("@([^@%s>]+)%s*$")
	return domain and domain:lower()
end

local function sign_with(msg, base, block, domain)
	local selector = block.selector or base.selector
	local algo = block.algo or "sha256"
	local params = {
		domain = domain,
		selector = selector,
		headers = block.headers or base.headers,
		expiration = block.expiration or base.expiration,
		header_canonicalization = block.header_canonicalization or base.header_canonicalization,
		body_canonicalization = block.body_canonicalization or base.body_canonicalization,
		over_sign = block.over_sign or base.over_sign,
		key = block.filename or string.format("/opt/kumomta/etc/dkim/%s/%s.key", domain, selector),
	}
	local signer = algo == "ed25519" and kumo.dkim.ed25519_signer(params) or kumo.dkim.rsa_sha256_signer(params)
	msg:dkim_sign(signer)
end

function mod:setup(data_files)
	if mod.CONFIGURED then
		error("dkim_sign module has already been configured", 2)
	end
	local files = helpers.check_file_list(data_files, "dkim_sign helper")
	local get_data = helpers.memoized_data(load_data, files, {
		name = "dkim_sign_data",
		ttl = "5 minutes",
		capacity = 10,
		invalidate_with_epoch = true,
	}, function(data)
		return kumo.domain_map.new(helpers.deep_copy(data.domain))
	end)
	mod.CONFIGURED = { data_files = files, get_data = get_data }

	return function(msg)
		local data, domains = get_data()
		local domain = from_domain(msg)
		if not domain then
			kumo.reject(552, "5.6.0 DKIM signing requires a From header with an address, but this message has none")
		end
		local block = domains[domain]
		if block then
			sign_with(msg, data.base, block, domain)
		end
		for _, name in ipairs(data.base.additional_signatures or {}) do
			local sig = data.signature[name]
			if (sig.policy or "Always") == "Always" or not block then
				sign_with(msg, data.base, sig, sig.domain)
			end
		end
	end
end

return mod
