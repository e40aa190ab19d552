/* SPDX-License-Identifier: Apache-2.0 */
/* The utility modules KumoMTA policies stand on (docs/policy-utils.md),
 * registered into the kumo table in one call from lua_kumo__open. */
#include "lua/lua_int.h"

void lua_util__register(lua_State *L)
{
	lua_toml__register(L);
	lua_memoize__register(L);
}
