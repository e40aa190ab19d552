/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.time (kumo-policy-surface.md §1.9): UTC instants and durations.
 * Time: fields year month day hour minute second unix_timestamp
 * unix_timestamp_millis rfc2822 rfc3339 elapsed, :format(strftime),
 * tostring "YYYY-MM-DD HH:MM:SS UTC", ==, < , + and - a TimeDelta, t - t.
 * TimeDelta: seconds milliseconds microseconds nanoseconds human, ==, <, +, -.
 * start_timer(label) -> :done() (seconds; observes user_lua_latency{label};
 * <close>-able). kumo.time.sleep is in lua_fs.c (it waits on the loop). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "lua/lua_int.h"
#include "proto/duration.h"

#define TIME_MT "kumo.time.Time"
#define DELTA_MT "kumo.time.TimeDelta"
#define TIMER_MT "kumo.time.Timer"
#define NS 1000000000LL

struct ktime {
	int64_t ns; /* since the Unix epoch, UTC */
};

struct kdelta {
	int64_t ns;
};

struct ktimer {
	uint64_t start_ns;
	int done;
	char label[64];
};

static int64_t floordiv(int64_t a, int64_t b)
{
	return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

static void push_time(lua_State *L, int64_t ns)
{
	struct ktime *t = lua_newuserdatauv(L, sizeof(*t), 0);
	t->ns = ns;
	luaL_setmetatable(L, TIME_MT);
}

static void push_delta(lua_State *L, int64_t ns)
{
	struct kdelta *d = lua_newuserdatauv(L, sizeof(*d), 0);
	d->ns = ns;
	luaL_setmetatable(L, DELTA_MT);
}

void lua_time__push(lua_State *L, int64_t ns)
{
	push_time(L, ns);
}

static void to_tm(int64_t ns, struct tm *tm)
{
	time_t secs = (time_t)floordiv(ns, NS);
	gmtime_r(&secs, tm);
}

static int t_tostring(lua_State *L)
{
	struct ktime *t = luaL_checkudata(L, 1, TIME_MT);
	struct tm tm;
	char b[64];
	to_tm(t->ns, &tm);
	strftime(b, sizeof(b), "%Y-%m-%d %H:%M:%S UTC", &tm);
	lua_pushstring(L, b);
	return 1;
}

static void push_rfc3339(lua_State *L, int64_t ns)
{
	struct tm tm;
	char b[80];
	to_tm(ns, &tm);
	size_t n = strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
	int64_t frac = ns - floordiv(ns, NS) * NS;
	if (frac) {
		/* as chrono: 3, 6 or 9 digits */
		if (frac % 1000000 == 0)
			n += (size_t)snprintf(b + n, sizeof(b) - n, ".%03lld",
					      (long long)(frac / 1000000));
		else if (frac % 1000 == 0)
			n += (size_t)snprintf(b + n, sizeof(b) - n, ".%06lld",
					      (long long)(frac / 1000));
		else
			n += (size_t)snprintf(b + n, sizeof(b) - n, ".%09lld", (long long)frac);
	}
	snprintf(b + n, sizeof(b) - n, "+00:00");
	lua_pushstring(L, b);
}

static int t_format(lua_State *L)
{
	struct ktime *t = luaL_checkudata(L, 1, TIME_MT);
	const char *fmt = luaL_checkstring(L, 2);
	struct tm tm;
	char b[512];
	to_tm(t->ns, &tm);
	size_t n = strftime(b, sizeof(b), fmt, &tm);
	if (n == 0 && fmt[0])
		return luaL_error(L, "format: '%s' produced nothing or too much", fmt);
	lua_pushlstring(L, b, n);
	return 1;
}

static int t_index(lua_State *L)
{
	struct ktime *t = luaL_checkudata(L, 1, TIME_MT);
	const char *k = luaL_checkstring(L, 2);
	struct tm tm;
	to_tm(t->ns, &tm);
	if (!strcmp(k, "year"))
		lua_pushinteger(L, tm.tm_year + 1900);
	else if (!strcmp(k, "month"))
		lua_pushinteger(L, tm.tm_mon + 1);
	else if (!strcmp(k, "day"))
		lua_pushinteger(L, tm.tm_mday);
	else if (!strcmp(k, "hour"))
		lua_pushinteger(L, tm.tm_hour);
	else if (!strcmp(k, "minute"))
		lua_pushinteger(L, tm.tm_min);
	else if (!strcmp(k, "second"))
		lua_pushinteger(L, tm.tm_sec);
	else if (!strcmp(k, "unix_timestamp"))
		lua_pushinteger(L, floordiv(t->ns, NS));
	else if (!strcmp(k, "unix_timestamp_millis"))
		lua_pushinteger(L, floordiv(t->ns, 1000000));
	else if (!strcmp(k, "rfc3339"))
		push_rfc3339(L, t->ns);
	else if (!strcmp(k, "rfc2822")) {
		char b[80];
		strftime(b, sizeof(b), "%a, %-d %b %Y %H:%M:%S +0000", &tm);
		lua_pushstring(L, b);
	} else if (!strcmp(k, "elapsed"))
		push_delta(L, (int64_t)clock_wall_ns() - t->ns);
	else if (!strcmp(k, "format"))
		lua_pushcfunction(L, t_format);
	else
		return luaL_error(L, "kumo.time.Time has no field '%s'", k);
	return 1;
}

static int64_t check_ns(lua_State *L, int idx, const char *mt)
{
	return *(int64_t *)luaL_checkudata(L, idx, mt);
}

/* __eq, __lt and __le of both types; upvalues: metatable name, operator. */
static int compare(lua_State *L)
{
	const char *mt = lua_tostring(L, lua_upvalueindex(1));
	int op = (int)lua_tointeger(L, lua_upvalueindex(2));
	int64_t a = check_ns(L, 1, mt), b = check_ns(L, 2, mt);
	lua_pushboolean(L, op == LUA_OPEQ ? a == b : op == LUA_OPLT ? a < b : a <= b);
	return 1;
}

static int t_add(lua_State *L)
{
	int ti = luaL_testudata(L, 1, TIME_MT) ? 1 : 2;
	push_time(L, check_ns(L, ti, TIME_MT) + check_ns(L, 3 - ti, DELTA_MT));
	return 1;
}

static int t_sub(lua_State *L)
{
	int64_t a = check_ns(L, 1, TIME_MT);
	if (luaL_testudata(L, 2, TIME_MT))
		push_delta(L, a - check_ns(L, 2, TIME_MT));
	else
		push_time(L, a - check_ns(L, 2, DELTA_MT));
	return 1;
}

/* --- TimeDelta ------------------------------------------------------------------ */

static void human(luaL_Buffer *b, int64_t ns)
{
	if (ns == 0) {
		luaL_addstring(b, "0s");
		return;
	}
	if (ns < 0) {
		luaL_addchar(b, '-');
		ns = -ns;
	}
	static const struct {
		int64_t unit;
		const char *one, *many;
	} parts[] = {
	    {86400 * NS, "day", "days"}, {3600 * NS, "h", "h"}, {60 * NS, "m", "m"}, {NS, "s", "s"},
	    {1000000, "ms", "ms"},	 {1000, "us", "us"},	{1, "ns", "ns"},
	};
	int first = 1;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		int64_t v = ns / parts[i].unit;
		ns %= parts[i].unit;
		if (!v)
			continue;
		char tmp[48];
		snprintf(tmp, sizeof(tmp), "%s%lld%s", first ? "" : " ", (long long)v,
			 v == 1 ? parts[i].one : parts[i].many);
		luaL_addstring(b, tmp);
		first = 0;
	}
}

static int d_index(lua_State *L)
{
	int64_t ns = check_ns(L, 1, DELTA_MT);
	const char *k = luaL_checkstring(L, 2);
	if (!strcmp(k, "seconds"))
		lua_pushnumber(L, (double)ns / 1e9);
	else if (!strcmp(k, "milliseconds"))
		lua_pushinteger(L, ns / 1000000);
	else if (!strcmp(k, "microseconds"))
		lua_pushinteger(L, ns / 1000);
	else if (!strcmp(k, "nanoseconds"))
		lua_pushinteger(L, ns);
	else if (!strcmp(k, "human")) {
		luaL_Buffer b;
		luaL_buffinit(L, &b);
		human(&b, ns);
		luaL_pushresult(&b);
	} else
		return luaL_error(L, "kumo.time.TimeDelta has no field '%s'", k);
	return 1;
}

static int d_tostring(lua_State *L)
{
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	human(&b, check_ns(L, 1, DELTA_MT));
	luaL_pushresult(&b);
	return 1;
}

static int d_add(lua_State *L)
{
	if (luaL_testudata(L, 2, TIME_MT) || luaL_testudata(L, 1, TIME_MT))
		return t_add(L);
	push_delta(L, check_ns(L, 1, DELTA_MT) + check_ns(L, 2, DELTA_MT));
	return 1;
}

static int d_sub(lua_State *L)
{
	push_delta(L, check_ns(L, 1, DELTA_MT) - check_ns(L, 2, DELTA_MT));
	return 1;
}

/* --- constructors -------------------------------------------------------------------- */

static int l_now(lua_State *L)
{
	push_time(L, (int64_t)clock_wall_ns());
	return 1;
}

static int l_from_unix_timestamp(lua_State *L)
{
	if (lua_isinteger(L, 1))
		push_time(L, (int64_t)lua_tointeger(L, 1) * NS);
	else
		push_time(L, (int64_t)(luaL_checknumber(L, 1) * 1e9));
	return 1;
}

static int64_t tm_ns(struct tm *tm, int64_t frac_ns, int64_t offset_s)
{
	return ((int64_t)timegm(tm) - offset_s) * NS + frac_ns;
}

static int l_with_ymd_hms(lua_State *L)
{
	struct tm tm = {0};
	lua_Integer v[6];
	static const lua_Integer lo[6] = {1, 1, 1, 0, 0, 0}, hi[6] = {9999, 12, 31, 23, 59, 59};
	static const char *const names[6] = {"year", "month", "day", "hour", "minute", "second"};
	for (int i = 0; i < 6; i++) {
		v[i] = luaL_checkinteger(L, i + 1);
		if (v[i] < lo[i] || v[i] > hi[i])
			return luaL_error(L, "with_ymd_hms: %s %d is out of range", names[i],
					  (int)v[i]);
	}
	tm.tm_year = (int)v[0] - 1900;
	tm.tm_mon = (int)v[1] - 1;
	tm.tm_mday = (int)v[2];
	tm.tm_hour = (int)v[3];
	tm.tm_min = (int)v[4];
	tm.tm_sec = (int)v[5];
	struct tm check = tm;
	int64_t ns = tm_ns(&tm, 0, 0);
	struct tm back;
	to_tm(ns, &back);
	if (back.tm_mday != check.tm_mday || back.tm_mon != check.tm_mon) {
		char date[40];
		snprintf(date, sizeof(date), "%04d-%02d-%02d", (int)v[0], (int)v[1], (int)v[2]);
		return luaL_error(L, "with_ymd_hms: %s is not a date", date);
	}
	push_time(L, ns);
	return 1;
}

static int l_parse_rfc3339(lua_State *L)
{
	const char *s = luaL_checkstring(L, 1);
	struct tm tm = {0};
	const char *p = strptime(s, "%Y-%m-%d", &tm);
	if (!p || (*p != 'T' && *p != 't' && *p != ' '))
		goto bad;
	p = strptime(p + 1, "%H:%M:%S", &tm);
	if (!p)
		goto bad;
	int64_t frac = 0, scale = NS;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			goto bad;
		for (; *p >= '0' && *p <= '9'; p++)
			if (scale > 1) {
				scale /= 10;
				frac += (*p - '0') * scale;
			}
	}
	int64_t off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		int h, m;
		if (sscanf(p + 1, "%2d:%2d", &h, &m) != 2 || h > 23 || m > 59)
			goto bad;
		off = (h * 3600 + m * 60) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		goto bad;
	}
	if (*p)
		goto bad;
	push_time(L, tm_ns(&tm, frac, off));
	return 1;
bad:
	return luaL_error(L, "parse_rfc3339: '%s' is not an RFC 3339 date-time", s);
}

static int l_parse_rfc2822(lua_State *L)
{
	const char *s = luaL_checkstring(L, 1);
	struct tm tm = {0};
	const char *p = s;
	while (*p == ' ')
		p++;
	const char *q = strchr(p, ',');
	if (q)
		p = q + 1;
	p = strptime(p, " %d %b %Y %H:%M", &tm);
	if (!p)
		goto bad;
	if (*p == ':') {
		p = strptime(p, ":%S", &tm);
		if (!p)
			goto bad;
	}
	while (*p == ' ')
		p++;
	int64_t off = 0;
	if ((*p == '+' || *p == '-') && strlen(p) >= 5) {
		int hhmm;
		if (sscanf(p + 1, "%4d", &hhmm) != 1)
			goto bad;
		off = ((hhmm / 100) * 3600 + (hhmm % 100) * 60) * (*p == '-' ? -1 : 1);
	} else if (strncmp(p, "GMT", 3) && strncmp(p, "UT", 2)) {
		goto bad;
	}
	push_time(L, tm_ns(&tm, 0, off));
	return 1;
bad:
	return luaL_error(L, "parse_rfc2822: '%s' is not an RFC 2822 date-time", s);
}

static int l_parse_duration(lua_State *L)
{
	if (lua_type(L, 1) == LUA_TNUMBER) {
		push_delta(L, (int64_t)(lua_tonumber(L, 1) * 1e9));
		return 1;
	}
	const char *s = luaL_checkstring(L, 1);
	uint64_t us;
	if (duration_parse_us(s, &us) != 0)
		return luaL_error(L, "parse_duration: '%s' is not a duration", s);
	push_delta(L, (int64_t)us * 1000);
	return 1;
}

/* --- timers ----------------------------------------------------------------------- */

static int timer_done(lua_State *L)
{
	struct ktimer *t = luaL_checkudata(L, 1, TIMER_MT);
	double secs = (double)(clock_mono_ns() - t->start_ns) / 1e9;
	if (!t->done) {
		t->done = 1;
		metrics_histogram_observe("user_lua_latency", "label", t->label, secs);
	}
	lua_pushnumber(L, secs);
	return 1;
}

static int l_start_timer(lua_State *L)
{
	const char *label = luaL_checkstring(L, 1);
	struct ktimer *t = lua_newuserdatauv(L, sizeof(*t), 0);
	t->start_ns = clock_mono_ns();
	t->done = 0;
	snprintf(t->label, sizeof(t->label), "%s", label);
	luaL_setmetatable(L, TIMER_MT);
	return 1;
}

static const luaL_Reg time_funcs[] = {
    {"now", l_now},
    {"from_unix_timestamp", l_from_unix_timestamp},
    {"with_ymd_hms", l_with_ymd_hms},
    {"parse_rfc3339", l_parse_rfc3339},
    {"parse_rfc2822", l_parse_rfc2822},
    {"parse_duration", l_parse_duration},
    {"start_timer", l_start_timer},
    {NULL, NULL},
};

static void metatable(lua_State *L, const char *name, const luaL_Reg *m)
{
	static const struct {
		const char *event;
		int op;
	} cmps[] = {{"__eq", LUA_OPEQ}, {"__lt", LUA_OPLT}, {"__le", LUA_OPLE}};
	luaL_newmetatable(L, name);
	luaL_setfuncs(L, m, 0);
	for (size_t i = 0; i < sizeof(cmps) / sizeof(cmps[0]); i++) {
		lua_pushstring(L, name);
		lua_pushinteger(L, cmps[i].op);
		lua_pushcclosure(L, compare, 2);
		lua_setfield(L, -2, cmps[i].event);
	}
	lua_pop(L, 1);
}

void lua_time__register(lua_State *L)
{
	static const luaL_Reg tm[] = {
	    {"__index", t_index}, {"__tostring", t_tostring}, {"__add", t_add}, {"__sub", t_sub},
	    {NULL, NULL},
	};
	static const luaL_Reg dm[] = {
	    {"__index", d_index}, {"__tostring", d_tostring}, {"__add", d_add}, {"__sub", d_sub},
	    {NULL, NULL},
	};
	static const luaL_Reg timer[] = {{"done", timer_done}, {NULL, NULL}};
	metatable(L, TIME_MT, tm);
	metatable(L, DELTA_MT, dm);
	lua_util__class(L, TIMER_MT, timer, "__close", timer_done);
	luaL_newlib(L, time_funcs);
	lua_setfield(L, -2, "time");
}
