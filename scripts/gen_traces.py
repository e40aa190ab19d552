#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Generates kumod's tracepoints from the declarations in traces/*.tp.

One declaration per event (format: see the header of traces/kumod.tp) becomes:
  <out>/ktrace.h        KTRACE(name, ...) / KTRACE_ENABLED(name) and, per event,
                        an inline kt_<name>() firing USDT, LTTng-UST and the log
  <out>/ktrace_lttng.h  the LTTng-UST 2.13 provider header (provider `kumod`)
  <out>/ktrace_defs.c   USDT semaphores and probe sites, LTTng probes, log
                        renderers and the ktrace_decls[] table
  <doc>                 the Markdown event catalogue
Outputs are rewritten only when their content changes. Stdlib only.
"""

import argparse
import os
import re
import sys
from dataclasses import dataclass, field

PROVIDER = "kumod"
MAX_ARGS = 6  # USDT: keep within what every tool decodes; LTTng allows 10

# type -> (C type, LTTng field kind)
TYPES = {
    "u64": ("uint64_t", "integer"),
    "i64": ("int64_t", "integer"),
    "u32": ("uint32_t", "integer"),
    "i32": ("int32_t", "integer"),
    "str": ("const char *", "string"),
}

LEVELS = {
    # level -> (log.h level, LTTng loglevel)
    "ERROR": ("LOG_LEVEL_ERROR", "LTTNG_UST_TRACEPOINT_LOGLEVEL_ERR"),
    "WARN": ("LOG_LEVEL_WARN", "LTTNG_UST_TRACEPOINT_LOGLEVEL_WARNING"),
    "INFO": ("LOG_LEVEL_INFO", "LTTNG_UST_TRACEPOINT_LOGLEVEL_INFO"),
    "DEBUG": ("LOG_LEVEL_DEBUG", "LTTNG_UST_TRACEPOINT_LOGLEVEL_DEBUG"),
    "TRACE": ("LOG_LEVEL_TRACE", "LTTNG_UST_TRACEPOINT_LOGLEVEL_DEBUG_LINE"),
}

C_KEYWORDS = set(
    """auto break case char const continue default do double else enum extern
    float for goto if inline int long register restrict return short signed
    sizeof static struct switch typedef union unsigned void volatile while
    _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn
    _Static_assert _Thread_local asm typeof bool true false NULL errno
    stdin stdout stderr""".split()
)

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
ARG_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
TARGET_RE = re.compile(r"[A-Za-z0-9_]+(::[A-Za-z0-9_]+)*\Z")
DECL_RE = re.compile(
    r"(?P<name>\S+)\s+(?P<target>\S+)\s+(?P<level>\S+)\s*"
    r"\((?P<args>[^()]*)\)\s*\"(?P<fmt>(?:[^\"\\]|\\.)*)\"\s*\Z"
)
# Suffixes the generator appends to kt_<name>; an event may not be another's
# name plus one of them.
RESERVED_SUFFIXES = ("_at", "_enabled", "_enabled_at")


class DeclError(Exception):
    def __init__(self, path, line, msg):
        super().__init__(f"{path}:{line}: {msg}")


@dataclass
class Arg:
    type: str
    name: str

    @property
    def ctype(self):
        return TYPES[self.type][0]

    @property
    def is_str(self):
        return self.type == "str"


@dataclass
class Event:
    name: str
    target: str
    level: str
    args: list
    fmt: str
    pieces: list  # ("lit", text) | ("arg", Arg, raw)
    doc: str
    path: str
    line: int
    index: int = 0
    extra: dict = field(default_factory=dict)


def parse_format(fmt, args, err):
    """Splits a format into literal and placeholder pieces.

    `{arg}` renders a number bare or a string quoted and escaped; `{=arg}`
    renders a string escaped but unquoted; `{{` and `}}` are literal braces.
    """
    byname = {a.name: a for a in args}
    pieces, lit, i = [], [], 0
    while i < len(fmt):
        c = fmt[i]
        if c == "\\":
            if i + 1 >= len(fmt) or fmt[i + 1] not in "\\\"":
                raise err(f"bad escape in format at column {i + 1}: only \\\\ and \\\" are allowed")
            lit.append(fmt[i + 1])
            i += 2
        elif fmt.startswith("{{", i) or fmt.startswith("}}", i):
            lit.append(c)
            i += 2
        elif c == "{":
            j = fmt.find("}", i)
            if j < 0:
                raise err(f"unterminated placeholder in format: {fmt[i:]!r}")
            ref = fmt[i + 1 : j]
            raw = ref.startswith("=")
            ref = ref[1:] if raw else ref
            if ref not in byname:
                raise err(f"format placeholder {{{fmt[i + 1:j]}}} names no argument "
                          f"(arguments: {', '.join(byname) or 'none'})")
            if lit:
                pieces.append(("lit", "".join(lit)))
                lit = []
            pieces.append(("arg", byname[ref], raw))
            i = j + 1
        elif c == "}":
            raise err(f"unmatched '}}' in format at column {i + 1} (write '}}}}' for a literal brace)")
        else:
            if ord(c) < 0x20:
                raise err("control character in format")
            lit.append(c)
            i += 1
    if lit:
        pieces.append(("lit", "".join(lit)))
    return pieces


def parse_args(text, err):
    args = []
    text = text.strip()
    if not text:
        return args
    for part in text.split(","):
        words = part.split()
        if len(words) != 2:
            raise err(f"bad argument {part.strip()!r}: want '<type> <name>'")
        typ, name = words
        if typ not in TYPES:
            raise err(f"unknown type {typ!r} for argument {name!r} (types: {' '.join(TYPES)})")
        if not ARG_RE.match(name) or name in C_KEYWORDS or name.startswith(("kt_", "lttng")):
            raise err(f"bad argument name {name!r}: lower-case C identifier, not a keyword, "
                      "not starting with kt_ or lttng")
        if any(a.name == name for a in args):
            raise err(f"duplicate argument {name!r}")
        args.append(Arg(typ, name))
    if len(args) > MAX_ARGS:
        raise err(f"{len(args)} arguments: at most {MAX_ARGS} (USDT limit)")
    return args


def parse_file(path):
    events, doc = [], []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()

        def err(msg, lineno=lineno):
            return DeclError(path, lineno, msg)

        if not line:
            doc = []
            continue
        if line.startswith("#"):
            doc.append(line[1:].strip())
            continue
        m = DECL_RE.match(line)
        if not m:
            raise err("cannot parse declaration: want "
                      "'<name> <target> <LEVEL> (<type> <arg>, ...) \"<format>\"'")
        name, target, level = m["name"], m["target"], m["level"]
        if not NAME_RE.match(name):
            raise err(f"bad event name {name!r}: lower-case C identifier, at most 64 chars")
        if not TARGET_RE.match(target):
            raise err(f"bad target {target!r}: words separated by '::'")
        if level not in LEVELS:
            raise err(f"bad level {level!r} (levels: {' '.join(LEVELS)})")
        args = parse_args(m["args"], err)
        pieces = parse_format(m["fmt"], args, err)
        text = " ".join(d for d in doc if d)
        if not text:
            raise err(f"event {name!r} has no doc comment on the line above")
        events.append(Event(name, target, level, args, m["fmt"], pieces, text, path, lineno))
        doc = []
    return events


def check_names(events):
    seen = {}
    for ev in events:
        if ev.name in seen:
            prev = seen[ev.name]
            raise DeclError(ev.path, ev.line,
                            f"duplicate event {ev.name!r} (first declared at {prev.path}:{prev.line})")
        seen[ev.name] = ev
    for ev in events:
        for suf in RESERVED_SUFFIXES:
            if ev.name.endswith(suf) and ev.name[: -len(suf)] in seen:
                raise DeclError(ev.path, ev.line,
                                f"event {ev.name!r} collides with kt_{ev.name[:-len(suf)]}{suf}()")


def load(paths):
    events = []
    for p in paths:
        events.extend(parse_file(p))
    check_names(events)
    for i, ev in enumerate(events):
        ev.index = i
    return events


# --- C helpers -------------------------------------------------------------

def c_str(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "?":
            out.append("\\?")  # no trigraphs
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        else:
            for b in ch.encode("utf-8"):
                out.append(f'\\{b:03o}')
    out.append('"')
    return "".join(out)


def params(ev):
    return ", ".join(f"{a.ctype}{'' if a.is_str else ' '}{a.name}" for a in ev.args) or "void"


def names(ev):
    return ", ".join(a.name for a in ev.args)


def lttng_args(ev):
    return ", ".join(f"{a.name} ? {a.name} : \"\"" if a.is_str else a.name for a in ev.args)


def header_comment(paths, what):
    srcs = " ".join(paths)
    return (f"/* SPDX-License-Identifier: Apache-2.0 */\n"
            f"/* {what}\n * Generated by scripts/gen_traces.py from {srcs}: do not edit. */\n")


def gen_ktrace_h(events, paths):
    o = [header_comment(paths, "kumod tracepoints: one inline kt_<name>() per declared event.")]
    o.append("""#ifndef KUMOD_KTRACE_H
#define KUMOD_KTRACE_H

/* Each event fires (1) its USDT probe `kumod:<name>` when a tracer has set the
 * probe's semaphore, (2) the LTTng-UST event `kumod:<name>` when a session
 * enabled it, (3) a diagnostic log line when KUMOD_LOG enables the event's
 * target and level. Disabled, an event costs two loads and branches plus the
 * cached log verdict; KTRACE_ENABLED(name) guards costly argument preparation.
 *
 *   KTRACE(task_spawn, id, kind, name, parent, location);
 *   if (KTRACE_ENABLED(smtp_cmd))
 *           KTRACE(smtp_cmd, sid, state, expensive_render(line));
 *
 * KTRACE and KTRACE_ENABLED keep a log_site per call site; kt_<name>() and
 * kt_<name>_enabled() are the same with one log_site per translation unit. */

#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

#ifndef USE_USDT
#define USE_USDT 0
#endif
#ifndef USE_LTTNG
#define USE_LTTNG 0
#endif

#if USE_LTTNG
#ifndef LTTNG_UST_COMPAT_API_VERSION
#define LTTNG_UST_COMPAT_API_VERSION 1
#endif
#include "ktrace_lttng.h"
#endif

/* One declaration, for tests and introspection. */
struct ktrace_decl {
	const char *name;
	const char *target;
	enum log_level level;
	const char *args; /* "u64 id, str kind" */
	const char *format;
	const char *doc;
};

extern const struct ktrace_decl ktrace_decls[];
extern const size_t ktrace_ndecls;

/* Index of each event in ktrace_decls[]. */
enum ktrace_event {
""")
    for ev in events:
        o.append(f"\tKTRACE_EV_{ev.name.upper()} = {ev.index},\n")
    o.append(f"\tKTRACE_EV__COUNT = {len(events)},\n}};\n\n")
    o.append("""#define KTRACE_SITE_INIT(name) {KT_TARGET_##name, KT_LEVEL_##name, ~0u, 0}

#define KTRACE(name, ...)                                                                          \\
	do {                                                                                       \\
		static struct log_site kt_site_ = KTRACE_SITE_INIT(name);                          \\
		kt_##name##_at(&kt_site_, ##__VA_ARGS__);                                          \\
	} while (0)

#define KTRACE_ENABLED(name)                                                                       \\
	({                                                                                         \\
		static struct log_site kt_esite_ = KTRACE_SITE_INIT(name);                         \\
		kt_##name##_enabled_at(&kt_esite_);                                                \\
	})
""")
    for ev in events:
        o.append(gen_event_inline(ev))
    o.append("\n#endif\n")
    return "".join(o)


def gen_event_inline(ev):
    n = ev.name
    p = params(ev)
    site_p = f"struct log_site *kt_site{', ' + p if ev.args else ''}"
    call_args = names(ev)
    site_call = f"kt_site{', ' + call_args if ev.args else ''}"
    tu_call = f"&kt_tu_site{', ' + call_args if ev.args else ''}"
    usdt = f"""#if USE_USDT
	if (__builtin_expect(kumod_{n}_semaphore, 0))
		kt__usdt_{n}({call_args});
#endif
"""
    lttng = f"""#if USE_LTTNG
	if (lttng_ust_tracepoint_enabled(kumod, {n}))
		lttng_ust_do_tracepoint(kumod, {n}{', ' + lttng_args(ev) if ev.args else ''});
#endif
"""
    return f"""
/* {n} ({ev.target} {ev.level}): {ev.doc} */
#define KT_TARGET_{n} {c_str(ev.target)}
#define KT_LEVEL_{n} {LEVELS[ev.level][0]}
#if USE_USDT
extern unsigned short kumod_{n}_semaphore;
void kt__usdt_{n}({p});
#endif
void kt__log_{n}(const struct log_site *kt_site{', ' + p if ev.args else ''});

static inline int kt_{n}_enabled_at(struct log_site *kt_site)
{{
#if USE_USDT
	if (__builtin_expect(kumod_{n}_semaphore, 0))
		return 1;
#endif
#if USE_LTTNG
	if (lttng_ust_tracepoint_enabled(kumod, {n}))
		return 1;
#endif
	return log_site_enabled(kt_site);
}}

static inline void kt_{n}_at({site_p})
{{
{usdt}{lttng}	if (log_site_enabled(kt_site))
		kt__log_{n}({site_call});
}}

static inline void kt_{n}({p})
{{
	static struct log_site kt_tu_site = KTRACE_SITE_INIT({n});
	kt_{n}_at({tu_call});
}}

static inline int kt_{n}_enabled(void)
{{
	static struct log_site kt_tu_site = KTRACE_SITE_INIT({n});
	return kt_{n}_enabled_at(&kt_tu_site);
}}
"""


def gen_lttng_h(events, paths):
    o = [header_comment(paths, "LTTng-UST 2.13 provider `kumod` (v1 API names).")]
    o.append("""
#undef LTTNG_UST_TRACEPOINT_PROVIDER
#define LTTNG_UST_TRACEPOINT_PROVIDER kumod

#undef LTTNG_UST_TRACEPOINT_INCLUDE
#define LTTNG_UST_TRACEPOINT_INCLUDE "ktrace_lttng.h"

#if !defined(KUMOD_KTRACE_LTTNG_H) || defined(LTTNG_UST_TRACEPOINT_HEADER_MULTI_READ)
#define KUMOD_KTRACE_LTTNG_H

#ifndef LTTNG_UST_COMPAT_API_VERSION
#define LTTNG_UST_COMPAT_API_VERSION 1
#endif
#include <stdint.h>
#include <lttng/tracepoint.h>
""")
    for ev in events:
        tp_args = ", ".join(f"{a.ctype}, {a.name}" for a in ev.args)
        fields = []
        for a in ev.args:
            if a.is_str:
                fields.append(f"\t\tlttng_ust_field_string({a.name}, {a.name})")
            else:
                fields.append(f"\t\tlttng_ust_field_integer({a.ctype}, {a.name}, {a.name})")
        o.append(f"""
/* {ev.doc} */
LTTNG_UST_TRACEPOINT_EVENT(kumod, {ev.name},
	LTTNG_UST_TP_ARGS({tp_args}),
	LTTNG_UST_TP_FIELDS(
{chr(10).join(fields)}
	)
)
LTTNG_UST_TRACEPOINT_LOGLEVEL(kumod, {ev.name}, {LEVELS[ev.level][1]})
""")
    o.append("""
#endif /* KUMOD_KTRACE_LTTNG_H */

#include <lttng/tracepoint-event.h>
""")
    return "".join(o)


def gen_renderer(ev):
    n = ev.name
    p = params(ev)
    body = []
    for piece in ev.pieces:
        if piece[0] == "lit":
            lit = piece[1]
            body.append(f"\tkt__put(&kt_b, {c_str(lit)}, {len(lit.encode('utf-8'))});\n")
            continue
        _, a, raw = piece
        if a.is_str:
            body.append(f"\tkt__put_str(&kt_b, {a.name}, {0 if raw else 1});\n")
        elif a.type in ("u64", "u32"):
            body.append(f"\tkt__put_u64(&kt_b, {a.name});\n")
        else:
            body.append(f"\tkt__put_i64(&kt_b, {a.name});\n")
    return f"""
void kt__log_{n}(const struct log_site *kt_site{', ' + p if ev.args else ''})
{{
	char kt_mem[KT_LINE_MAX];
	struct kt_buf kt_b = {{kt_mem, 0}};
{''.join(body)}	log_emit(kt_site, kt_mem);
}}
"""


def gen_defs_c(events, paths):
    o = [header_comment(paths, "kumod tracepoint definitions: USDT semaphores and probe sites,\n"
                        " * LTTng-UST probes, log renderers and the declaration table.")]
    o.append("""#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#if USE_USDT
/* What `dtrace -G` generates: semaphores in .probes, referenced by the notes. */
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>
#endif

#if USE_LTTNG
#define LTTNG_UST_COMPAT_API_VERSION 1
#define LTTNG_UST_TRACEPOINT_CREATE_PROBES
#define LTTNG_UST_TRACEPOINT_DEFINE
#include "ktrace_lttng.h"
/* ktrace.h includes the provider header again: declarations only. */
#undef LTTNG_UST_TRACEPOINT_CREATE_PROBES

#endif

#include "ktrace.h"

""")
    o.append("#if USE_USDT\n")
    for ev in events:
        o.append(f"unsigned short kumod_{ev.name}_semaphore "
                 "__attribute__((section(\".probes\"), used));\n")
    o.append("""
/* Out of line so that each probe has exactly one site (one stapsdt note) and
 * is in the binary even before any caller uses it. */
""")
    for ev in events:
        n = len(ev.args)
        if n == 0:
            probe = f"DTRACE_PROBE(kumod, {ev.name});"
        else:
            probe = f"DTRACE_PROBE{n}(kumod, {ev.name}, {names(ev)});"
        o.append(f"\nvoid kt__usdt_{ev.name}({params(ev)})\n{{\n\t{probe}\n}}\n")
    o.append("#endif /* USE_USDT */\n")
    o.append("""
/* --- log renderers --------------------------------------------------------- */

#define KT_LINE_MAX 4096

struct kt_buf {
	char *p;
	size_t len; /* < KT_LINE_MAX; p[len] == 0 */
};

static void kt__put(struct kt_buf *b, const char *s, size_t n)
{
	size_t room = KT_LINE_MAX - 1 - b->len;
	if (n > room)
		n = room;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void kt__put_u64(struct kt_buf *b, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
	kt__put(b, tmp, (size_t)n);
}

static void kt__put_i64(struct kt_buf *b, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
	kt__put(b, tmp, (size_t)n);
}

/* Escaped, and double-quoted unless the placeholder was {=arg}. */
static void kt__put_str(struct kt_buf *b, const char *s, int quote)
{
	if (!s)
		s = "";
	if (quote)
		kt__put(b, "\\"", 1);
	/* Keep room for the closing quote. */
	size_t room = KT_LINE_MAX - b->len - (quote ? 1 : 0);
	if (room > 1) {
		size_t n = log_escape(b->p + b->len, room, s, strlen(s));
		b->len += n < room ? n : room - 1;
		b->p[b->len] = 0;
	}
	if (quote)
		kt__put(b, "\\"", 1);
}
""")
    for ev in events:
        o.append(gen_renderer(ev))
    o.append("\n/* --- declaration table ---------------------------------------------------- */\n")
    o.append("\nconst struct ktrace_decl ktrace_decls[] = {\n")
    for ev in events:
        argtext = ", ".join(f"{a.type} {a.name}" for a in ev.args)
        o.append(f"\t{{{c_str(ev.name)}, {c_str(ev.target)}, {LEVELS[ev.level][0]}, "
                 f"{c_str(argtext)},\n\t {c_str(ev.fmt)},\n\t {c_str(ev.doc)}}},\n")
    o.append("};\n\nconst size_t ktrace_ndecls = sizeof(ktrace_decls) / sizeof(ktrace_decls[0]);\n")
    return "".join(o)


def md_cell(s):
    return s.replace("|", "\\|").replace("\n", " ")


def gen_doc(events, paths):
    o = [f"""<!-- Generated by scripts/gen_traces.py from {' '.join(paths)}: do not edit.
     Edit the .tp files and run `make` (the build regenerates this file). -->
# Tracepoint catalogue

Every event below is declared once in `traces/*.tp` and fires, from one inline
call, a USDT probe `kumod:<name>`, an LTTng-UST event `kumod:<name>` and, when
`KUMOD_LOG` enables its target and level, a diagnostic log line rendered from
the format. How to record and attach: [tracing.md](tracing.md).

```
KUMOD_LOG=kumod=trace,runtime=trace build/kumod --policy policy/init.lua   # log lines
readelf -n build/kumod | grep -A2 stapsdt                                  # list USDT probes
bpftrace -l 'usdt:./build/kumod:*'
lttng enable-event -u 'kumod:*'                                            # LTTng events
```

{len(events)} events. Argument types: `u64`/`i64`/`u32`/`i32` integers, `str`
a NUL-terminated string (NULL is recorded as the empty string).

| Event | Target | Level | Arguments | Description | Log format |
|---|---|---|---|---|---|
"""]
    for ev in events:
        argtext = ", ".join(f"{a.type} {a.name}" for a in ev.args) or "—"
        o.append(f"| `{ev.name}` | `{ev.target}` | {ev.level} | {md_cell(argtext)} | "
                 f"{md_cell(ev.doc)} | `{md_cell(ev.fmt)}` |\n")
    return "".join(o)


def write_if_changed(path, text):
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", help="where ktrace.h, ktrace_lttng.h, ktrace_defs.c go")
    ap.add_argument("--doc", help="Markdown catalogue to write")
    ap.add_argument("--check", action="store_true", help="only validate the declarations")
    ap.add_argument("tp", nargs="+", help="declaration files (traces/*.tp)")
    opts = ap.parse_args(argv)
    try:
        events = load(opts.tp)
    except DeclError as e:
        print(f"gen_traces: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"gen_traces: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    if opts.check:
        return 0
    # Paths as given (relative in the build), so outputs do not depend on cwd.
    paths = list(opts.tp)
    if opts.out_dir:
        write_if_changed(os.path.join(opts.out_dir, "ktrace.h"), gen_ktrace_h(events, paths))
        write_if_changed(os.path.join(opts.out_dir, "ktrace_lttng.h"), gen_lttng_h(events, paths))
        write_if_changed(os.path.join(opts.out_dir, "ktrace_defs.c"), gen_defs_c(events, paths))
    if opts.doc:
        write_if_changed(opts.doc, gen_doc(events, paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
