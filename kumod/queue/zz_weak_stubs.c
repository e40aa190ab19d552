/* SPDX-License-Identifier: Apache-2.0 */
/* TEMPORARY weak fallbacks while spool.c, logrec.c and resolver.c are being
 * written; the real (strong) definitions replace these at link time. */
#include <errno.h>
#include <stdio.h>

#include "dns/resolver.h"
#include "spool/logrec.h"
#include "spool/spool.h"

#define WEAK __attribute__((weak))
WEAK int spool_open(uv_loop_t *loop, const struct spool_config *cfg, char *err, size_t errlen)
{
	snprintf(err, errlen, "spool not built");
	return -ENOSYS;
}
WEAK int spool_is_open(void)
{
	return 0;
}
WEAK void spool_store(struct message *m, spool_cb cb, void *ctx)
{
	cb(ctx, -ENOSYS);
}
WEAK void spool_remove(const char *id, spool_cb cb, void *ctx)
{
	if (cb)
		cb(ctx, 0);
}
WEAK void spool_close(void)
{
}
WEAK void spool_recover(void (*fn)(struct message *m, void *ctx),
			void (*done)(void *ctx, size_t loaded, size_t quarantined), void *ctx)
{
	done(ctx, 0, 0);
}
WEAK void logrec_log(const char *type, const struct message *m, const char *recipient,
		     const struct logrec_response *resp, const struct logrec_peer *peer,
		     const char *queue, const char *site, const char *egress_pool,
		     const char *egress_source, const char *reception_protocol)
{
}
WEAK int logrec_configure(const struct logrec_config *cfg, char *err, size_t errlen)
{
	snprintf(err, errlen, "log records not built");
	return -1;
}
WEAK void logrec_shutdown(void)
{
}
WEAK int dns_init(uv_loop_t *loop, const char *servers, char *err, size_t errlen)
{
	return 0;
}
WEAK int dns_set_servers(const char *servers, char *err, size_t errlen)
{
	return 0;
}
WEAK void dns_shutdown(void)
{
}
WEAK void dns_resolve_mx(const char *domain, dns_mx_cb cb, void *ctx)
{
	struct dns_mx_result r = {.status = DNS_TEMPFAIL};
	snprintf(r.error, sizeof(r.error), "DNS not built");
	cb(ctx, &r);
}
WEAK void dns_resolve_host(const char *host, dns_mx_cb cb, void *ctx)
{
	dns_resolve_mx(host, cb, ctx);
}
