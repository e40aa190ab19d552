/* SPDX-License-Identifier: Apache-2.0 */
/* kumo-console terminal UI (ncursesw): tasks, task details, queues, loop
 * and help views; keys as in tokio-console and htop. */
#define _XOPEN_SOURCE_EXTENDED 1
#include <curses.h>
#include <inttypes.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "base/buf.h"
#include "base/xalloc.h"
#include "console.h"
#include "proto/console_proto.h"

/* Messages asked for per page of a queue's listing. */
#define KC_PAGE_ROWS 100

enum kc_view {
	KC_VIEW_TASKS = 0,
	KC_VIEW_DETAILS,
	KC_VIEW_QUEUES,
	KC_VIEW_LOOP,
	KC_VIEW_HELP,
	KC_VIEW_QMSGS,	 /* a scheduled queue's messages, a page at a time */
	KC_VIEW_MESSAGE, /* one message: metadata and timeline */
};

enum {
	PAIR_HEAD = 1,
	PAIR_RUN,
	PAIR_SCHED,
	PAIR_WARN,
	PAIR_BAD,
	PAIR_SEL,
};

static struct {
	int ascii, colors;
	enum kc_view view, prev_view;
	enum kc_col sort;
	int invert;
	size_t sel, top;   /* tasks table */
	size_t qsel, qtop; /* queues table */
	int qsort, qinvert;
	uint64_t sel_id; /* keeps the selection on the same task across updates */
	int sel_moved;	 /* a key moved sel: sel_id follows sel, not the reverse */
	uint64_t watch_id;
	char filter[128];
	int editing; /* the / prompt is open */
	int pending_g;
	/* drill-down: queue -> its messages -> one message */
	char qname[1024]; /* the queue whose messages are listed */
	char qafter[64];  /* the page's cursor ("" = the first page) */
	unsigned page;	  /* page number shown (1 = first) */
	size_t msel, mtop;
	char msg_id[64];
	enum kc_view msg_back; /* where Esc leaves the message view for */
} ui = {.sort = KC_COL_ID, .qsort = 2, .qinvert = 1};

int kc_tui_start(int ascii, int colors)
{
	setlocale(LC_ALL, "");
	if (!initscr())
		return -1;
	cbreak();
	noecho();
	keypad(stdscr, TRUE);
	nodelay(stdscr, TRUE);
	curs_set(0);
	set_escdelay(25);
	ui.ascii = ascii;
	ui.colors = colors && has_colors();
	if (ui.colors) {
		start_color();
		use_default_colors();
		init_pair(PAIR_HEAD, COLOR_BLACK, COLOR_CYAN);
		init_pair(PAIR_RUN, COLOR_GREEN, -1);
		init_pair(PAIR_SCHED, COLOR_YELLOW, -1);
		init_pair(PAIR_WARN, COLOR_YELLOW, -1);
		init_pair(PAIR_BAD, COLOR_RED, -1);
		init_pair(PAIR_SEL, COLOR_BLACK, COLOR_WHITE);
	}
	return 0;
}

void kc_tui_stop(void)
{
	endwin();
}

uint64_t kc_tui_watch_id(void)
{
	return ui.watch_id;
}

static void kc_attr(int pair, int extra)
{
	attrset((ui.colors && pair ? COLOR_PAIR(pair) : 0) | extra);
}

/* Prints s at (y, x) in exactly w columns: cut or padded (UTF-8 aware). */
static void put(int y, int x, int w, const char *s)
{
	if (w <= 0 || x >= COLS)
		return;
	if (x + w > COLS)
		w = COLS - x;
	wchar_t wc[512];
	size_t n = mbstowcs(wc, s, sizeof(wc) / sizeof(wc[0]) - 1);
	if (n == (size_t)-1) {
		n = 0; /* not valid in this locale: show nothing rather than garbage */
		wc[0] = 0;
	}
	wc[n] = 0;
	move(y, x);
	int used = 0;
	for (size_t i = 0; i < n; i++) {
		if (wc[i] < 0x20 || wc[i] == 0x7f)
			wc[i] = L' '; /* a control character would move the cursor */
		int cw = wcwidth(wc[i]);
		if (cw < 0)
			cw = 1;
		if (used + cw > w)
			break;
		addnwstr(&wc[i], 1);
		used += cw;
	}
	for (; used < w; used++)
		addch(' ');
}

static void fmt_pct(char *out, size_t cap, uint64_t part, uint64_t total)
{
	snprintf(out, cap, "%.1f%%", total ? 100.0 * (double)part / (double)total : 0.0);
}

/* --- header ----------------------------------------------------------------- */

static int draw_header(struct kc_model *m, const struct kc_tui_status *st)
{
	char line[512];
	const char *ver = m->hello ? json_string_value(json_object_get(m->hello, "version")) : NULL;
	json_int_t pid =
	    m->hello ? json_integer_value(json_object_get(m->hello, "pid")) : (json_int_t)0;
	snprintf(line, sizeof(line),
		 " kumo-console | %s | kumod %s pid %" JSON_INTEGER_FORMAT "%s%s", st->conn,
		 ver ? ver : "?", pid, m->paused ? " | PAUSED" : "", st->replay ? " | " : "");
	kc_attr(PAIR_HEAD, A_BOLD);
	move(0, 0);
	for (int i = 0; i < COLS; i++)
		addch(' ');
	mvaddnstr(0, 0, line, COLS);
	if (st->replay)
		addnstr(st->replay, COLS);
	kc_attr(0, 0);
	uint64_t dropped = m->dropped_events;
	if (m->loop) {
		json_int_t d = json_integer_value(json_object_get(m->loop, "dropped_events"));
		if ((uint64_t)d > dropped)
			dropped = (uint64_t)d;
	}
	snprintf(line, sizeof(line),
		 " views: t tasks  Q queues  L loop  ? help  | dropped events: %" PRIu64 "%s%s",
		 dropped, m->last_error[0] ? " | server error: " : "", m->last_error);
	kc_attr(dropped ? PAIR_BAD : 0, 0);
	mvaddnstr(1, 0, line, COLS);
	kc_attr(0, 0);
	return 2;
}

/* One summary line per lint with hits, above the table. */
static int draw_lints(struct kc_model *m, int y)
{
	unsigned counts[KC_LINT__COUNT] = {0};
	for (size_t i = 0; i < m->ntasks; i++)
		for (int l = 0; l < KC_LINT__COUNT; l++)
			if (m->tasks[i]->warnings & (1u << l))
				counts[l]++;
	for (int l = 0; l < KC_LINT__COUNT; l++) {
		if (!counts[l])
			continue;
		char line[256];
		snprintf(line, sizeof(line), " %s %u task%s: %s (%s)", ui.ascii ? "!" : "\u26A0",
			 counts[l], counts[l] == 1 ? "" : "s", kc_lint_text((enum kc_lint)l),
			 kc_lint_name((enum kc_lint)l));
		kc_attr(PAIR_WARN, 0);
		mvaddnstr(y++, 0, line, COLS);
		kc_attr(0, 0);
	}
	return y;
}

/* --- tasks ------------------------------------------------------------------ */

/* Name, Kind and Phase are sized to the rows on screen each frame (at most
 * TEXT_COL_MAX); Fields takes the rest of the line. */
#define TEXT_COL_MAX 48
static int col_w[KC_COL__COUNT] = {4, 6, 10, 24, 14, 14, 8, 8, 8, 8, 8, 7, 0};

static void draw_task_row(struct kc_model *m, const struct kc_task *t, int y, int selected)
{
	struct kc_times tm;
	char cell[KC_COL__COUNT][256];
	kc_task_times(m, t, &tm);
	snprintf(cell[KC_COL_WARN], 256, "%s", t->warnings ? (ui.ascii ? "!" : "\u26A0") : "");
	snprintf(cell[KC_COL_ID], 256, "%" PRIu64, t->id);
	snprintf(cell[KC_COL_STATE], 256, "%s", kc_state_label(t, ui.ascii));
	snprintf(cell[KC_COL_NAME], 256, "%s", t->name);
	snprintf(cell[KC_COL_KIND], 256, "%s", t->kind);
	snprintf(cell[KC_COL_PHASE], 256, "%s", t->phase);
	kc_fmt_dur(tm.in_phase, cell[KC_COL_INPHASE], 256);
	kc_fmt_dur(tm.total, cell[KC_COL_TOTAL], 256);
	kc_fmt_dur(tm.busy, cell[KC_COL_BUSY], 256);
	kc_fmt_dur(tm.sched, cell[KC_COL_SCHED], 256);
	kc_fmt_dur(tm.idle, cell[KC_COL_IDLE], 256);
	snprintf(cell[KC_COL_POLLS], 256, "%" PRIu64, t->polls);
	kc_task_fields(t, cell[KC_COL_FIELDS], 256);
	int pair = !strcmp(t->state, "running")	    ? PAIR_RUN
		   : !strcmp(t->state, "scheduled") ? PAIR_SCHED
						    : 0;
	int extra = !strcmp(t->state, "done") ? A_DIM : 0;
	if (selected)
		kc_attr(PAIR_SEL, A_REVERSE * !ui.colors);
	else
		kc_attr(pair, extra);
	int x = 0;
	for (int c = 0; c < KC_COL__COUNT; c++) {
		int w = col_w[c] ? col_w[c] : COLS - x;
		if (!selected && c == KC_COL_WARN && t->warnings)
			kc_attr(PAIR_WARN, A_BOLD);
		put(y, x, w, cell[c]);
		if (!selected && c == KC_COL_WARN)
			kc_attr(pair, extra);
		x += w + 1;
		if (x >= COLS)
			break;
	}
	kc_attr(0, 0);
}

static void draw_task_head(int y, size_t n, size_t running, size_t idle)
{
	char title[320];
	snprintf(title, sizeof(title), " Tasks (%zu) %s Running (%zu) %s Idle (%zu)%s%s%s", n,
		 ui.ascii ? ">" : "\u25B6", running, ui.ascii ? "=" : "\u23F8", idle,
		 ui.filter[0] || ui.editing ? "  filter: " : "", ui.filter, ui.editing ? "_" : "");
	kc_attr(0, A_BOLD);
	mvaddnstr(y, 0, title, COLS);
	int x = 0;
	for (int c = 0; c < KC_COL__COUNT && x < COLS; c++) {
		int w = col_w[c] ? col_w[c] : COLS - x;
		char h[32];
		snprintf(h, sizeof(h), "%s%s", kc_col_names[c],
			 c == (int)ui.sort ? (ui.invert ? (ui.ascii ? "v" : "\u25BC")
							: (ui.ascii ? "^" : "\u25B2"))
					   : "");
		kc_attr(0, A_BOLD | A_UNDERLINE * (c == (int)ui.sort));
		put(y + 1, x, w, h);
		x += w + 1;
	}
	kc_attr(0, 0);
}

static void clamp_sel(size_t *sel, size_t *top, size_t n, int rows)
{
	if (n == 0) {
		*sel = *top = 0;
		return;
	}
	if (*sel >= n)
		*sel = n - 1;
	if (*sel < *top)
		*top = *sel;
	if (rows > 0 && *sel >= *top + (size_t)rows)
		*top = *sel - (size_t)rows + 1;
}

/* The selection follows its task when rows move, unless a key moved it. */
static void resolve_sel(struct kc_task **rows, size_t n)
{
	if (!ui.sel_moved && ui.sel_id)
		for (size_t i = 0; i < n; i++)
			if (rows[i]->id == ui.sel_id)
				ui.sel = i;
	if (n && ui.sel >= n)
		ui.sel = n - 1;
	ui.sel_id = n ? rows[ui.sel]->id : 0;
	ui.sel_moved = 0;
}

static void draw_tasks(struct kc_model *m, int y)
{
	y = draw_lints(m, y);
	struct kc_task **rows;
	size_t n = kc_model_rows(m, ui.filter, ui.sort, ui.invert, ui.ascii, &rows);
	size_t running = 0, idle = 0;
	for (size_t i = 0; i < n; i++) {
		running +=
		    !strcmp(rows[i]->state, "running") || !strcmp(rows[i]->state, "scheduled");
		idle += !strcmp(rows[i]->state, "idle");
	}
	kc_text_col_widths(rows, n, TEXT_COL_MAX, &col_w[KC_COL_NAME], &col_w[KC_COL_KIND],
			   &col_w[KC_COL_PHASE]);
	draw_task_head(y, n, running, idle);
	y += 2;
	int avail = LINES - y;
	resolve_sel(rows, n);
	clamp_sel(&ui.sel, &ui.top, n, avail);
	for (size_t i = ui.top; i < n && y < LINES; i++, y++)
		draw_task_row(m, rows[i], y, i == ui.sel);
	if (!n)
		mvaddnstr(y, 1, m->snapshot_complete ? "(no tasks match)" : "(waiting for state)",
			  COLS);
	free(rows);
}

/* --- details ---------------------------------------------------------------- */

static void spark(const json_t *oct, char *out, size_t cap)
{
	static const char *const blocks[] = {" ",      "\u2581", "\u2582", "\u2583", "\u2584",
					     "\u2585", "\u2586", "\u2587", "\u2588"};
	static const char ascii[] = " .:-=+*#@";
	json_int_t max = 0;
	size_t i;
	json_t *v;
	json_array_foreach(oct, i, v) if (json_integer_value(v) > max) max = json_integer_value(v);
	size_t n = 0;
	out[0] = '\0';
	json_array_foreach(oct, i, v)
	{
		json_int_t c = json_integer_value(v);
		int lvl = c && max ? (int)(1 + c * 7 / max) : 0;
		const char *g = ui.ascii ? (char[2]){ascii[lvl], 0} : blocks[lvl];
		size_t gl = strlen(g);
		if (n + gl + 1 >= cap)
			break;
		memcpy(out + n, g, gl + 1);
		n += gl;
	}
}

static int draw_hist(int y, const char *title, json_t *h)
{
	char line[512], p[8][16], sp[256];
	static const char *const keys[] = {"p10", "p25", "p50", "p75",
					   "p90", "p95", "p99", "max_ns"};
	for (int i = 0; i < 8; i++)
		kc_fmt_dur((uint64_t)json_integer_value(json_object_get(h, keys[i])), p[i], 16);
	snprintf(line, sizeof(line),
		 " %s (%" JSON_INTEGER_FORMAT " samples, %" JSON_INTEGER_FORMAT
		 " over 60s): p10 %s  p25 %s  p50 %s  p75 %s  p90 %s  p95 %s  p99 %s  max %s",
		 title, json_integer_value(json_object_get(h, "count")),
		 json_integer_value(json_object_get(h, "high_outliers")), p[0], p[1], p[2], p[3],
		 p[4], p[5], p[6], p[7]);
	mvaddnstr(y++, 0, line, COLS);
	spark(json_object_get(h, "octaves"), sp, sizeof(sp));
	snprintf(line, sizeof(line), "   <1us |%s| >60s  (one column per power of two)", sp);
	mvaddnstr(y++, 0, line, COLS);
	return y;
}

static const char *js(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));
	return v ? v : "";
}

static uint64_t ju(json_t *o, const char *k)
{
	return (uint64_t)json_integer_value(json_object_get(o, k));
}

/* An SMTP server session's envelope and latest transcript lines (the
 * task_details frame carries them for smtp_server tasks). */
static int draw_session(json_t *ss, int y)
{
	if (!json_is_object(ss))
		return y;
	char line[1024];
	json_t *env = json_object_get(ss, "envelope");
	snprintf(line, sizeof(line),
		 " Session %" PRIu64 "   Peer %s   Listener %s   State %s   HELO %s   TLS %s   "
		 "AUTH %s   Messages %" PRIu64,
		 ju(ss, "session_id"), js(ss, "peer"), js(ss, "listener"), js(ss, "state"),
		 *js(ss, "helo") ? js(ss, "helo") : "-", *js(ss, "tls") ? js(ss, "tls") : "-",
		 *js(ss, "authn_id") ? js(ss, "authn_id") : "-", ju(ss, "messages"));
	kc_attr(0, A_BOLD);
	mvaddnstr(y++, 0, line, COLS);
	kc_attr(0, 0);
	if (json_is_object(env)) {
		json_t *rc = json_object_get(env, "recipients");
		char rcpts[512] = "";
		size_t i, n = 0;
		json_t *v;
		json_array_foreach(rc, i, v)
		{
			int k = snprintf(rcpts + n, sizeof(rcpts) - n, "%s%s", i ? ", " : "",
					 json_string_value(v) ? json_string_value(v) : "");
			if (k < 0 || (size_t)k >= sizeof(rcpts) - n)
				break;
			n += (size_t)k;
		}
		snprintf(line, sizeof(line), " Envelope: MAIL FROM <%s>  RCPT TO (%" PRIu64 ") %s",
			 js(env, "sender"), ju(env, "rcpt_count"), rcpts);
	} else {
		snprintf(line, sizeof(line), " Envelope: (no open transaction)");
	}
	mvaddnstr(y++, 0, line, COLS);
	json_t *tr = json_object_get(ss, "transcript");
	snprintf(line, sizeof(line), " Transcript (latest %zu lines%s):", json_array_size(tr),
		 json_is_true(json_object_get(ss, "transcript_on")) ? "" : ", recording off");
	kc_attr(0, A_BOLD);
	mvaddnstr(y++, 0, line, COLS);
	kc_attr(0, 0);
	size_t i;
	json_t *l;
	json_array_foreach(tr, i, l)
	{
		if (y >= LINES - 6)
			break;
		int client = !strcmp(js(l, "dir"), "C");
		int k = snprintf(line, sizeof(line), " %7" PRIu64 "ms %s ", ju(l, "ms"),
				 client ? (ui.ascii ? "C>" : "C\u2192")
					: (ui.ascii ? "<S" : "\u2190S"));
		/* a multi-line reply arrives joined with \n: one screen line, | between */
		for (const char *p = js(l, "line"); *p && k + 4 < (int)sizeof(line); p++) {
			if (*p == '\n') {
				memcpy(line + k, " | ", 3);
				k += 3;
			} else {
				line[k++] = *p;
			}
		}
		line[k] = '\0';
		kc_attr(client ? 0 : PAIR_RUN, 0);
		put(y++, 0, COLS, line);
		kc_attr(0, 0);
	}
	return y + 1;
}

static void draw_details(struct kc_model *m, int y)
{
	struct kc_task *t = kc_model_task(m, ui.watch_id);
	char line[768], a[16], b[16], c[16], d[16], e[16], pa[16], pb[16], pc[16], fields[512];
	if (!t) {
		snprintf(line, sizeof(line), " task %" PRIu64 " is gone (Esc: back)", ui.watch_id);
		mvaddnstr(y, 0, line, COLS);
		return;
	}
	struct kc_times tm;
	kc_task_times(m, t, &tm);
	kc_attr(0, A_BOLD);
	snprintf(line, sizeof(line), " Task %" PRIu64 " - %s (%s)   [Esc: back]", t->id, t->name,
		 t->kind);
	mvaddnstr(y++, 0, line, COLS);
	kc_attr(0, 0);
	snprintf(line, sizeof(line),
		 " State: %s   Phase: %s   Wait: %s   Parent: %" PRIu64 "   Location: %s",
		 kc_state_label(t, ui.ascii), t->phase[0] ? t->phase : "-",
		 t->wait[0] ? t->wait : "-", t->parent, t->location);
	mvaddnstr(y++, 0, line, COLS);
	kc_fmt_dur(tm.total, a, 16);
	kc_fmt_dur(tm.busy, b, 16);
	kc_fmt_dur(tm.sched, c, 16);
	kc_fmt_dur(tm.idle, d, 16);
	kc_fmt_dur(tm.in_phase, e, 16);
	fmt_pct(pa, 16, tm.busy, tm.total);
	fmt_pct(pb, 16, tm.sched, tm.total);
	fmt_pct(pc, 16, tm.idle, tm.total);
	snprintf(line, sizeof(line),
		 " Total %s   Busy %s (%s)   Scheduled %s (%s)   Idle %s (%s)   In phase %s", a, b,
		 pa, c, pb, d, pc, e);
	mvaddnstr(y++, 0, line, COLS);
	kc_fmt_dur(t->longest_poll_ns, a, 16);
	kc_fmt_dur(t->last_wake && m->now > t->last_wake ? m->now - t->last_wake : 0, b, 16);
	fmt_pct(pa, 16, t->self_wakes, t->wakes);
	char ago[48] = "";
	if (t->last_wake)
		snprintf(ago, sizeof(ago), ", last %s ago", b);
	snprintf(line, sizeof(line),
		 " Polls %" PRIu64 "   Longest poll %s   Woken %" PRIu64
		 " times%s   Self wakes %" PRIu64 " (%s)",
		 t->polls, a, t->wakes, ago, t->self_wakes, pa);
	mvaddnstr(y++, 0, line, COLS);
	kc_task_fields(t, fields, sizeof(fields));
	snprintf(line, sizeof(line), " Fields: %s", fields[0] ? fields : "-");
	mvaddnstr(y++, 0, line, COLS);
	for (int l = 0; l < KC_LINT__COUNT; l++) {
		if (!(t->warnings & (1u << l)))
			continue;
		snprintf(line, sizeof(line), " %s %s (%s)", ui.ascii ? "!" : "\u26A0",
			 kc_lint_text((enum kc_lint)l), kc_lint_name((enum kc_lint)l));
		kc_attr(PAIR_WARN, 0);
		mvaddnstr(y++, 0, line, COLS);
		kc_attr(0, 0);
	}
	y++;
	json_t *det = m->details;
	if (!det || (uint64_t)json_integer_value(json_object_get(det, "id")) != t->id) {
		mvaddnstr(y, 0, " (waiting for poll and scheduled time histograms)", COLS);
		return;
	}
	y = draw_session(json_object_get(det, "session"), y);
	y = draw_hist(y, "Poll times", json_object_get(det, "poll_hist"));
	y++;
	draw_hist(y, "Scheduled times", json_object_get(det, "sched_hist"));
}

/* --- queues and loop -------------------------------------------------------- */

static void queue_cells(json_t *o, uint64_t now, char *out, size_t cap)
{
	char due[24] = "-";
	uint64_t nd = (uint64_t)json_integer_value(json_object_get(o, "next_due_ms")) * 1000000ull;
	if (nd && nd > now) {
		due[0] = '+';
		kc_fmt_dur(nd - now, due + 1, sizeof(due) - 1);
	} else if (nd) {
		snprintf(due, sizeof(due), "due");
	}
	snprintf(out, cap,
		 "%8" JSON_INTEGER_FORMAT " %6" JSON_INTEGER_FORMAT "/%-6" JSON_INTEGER_FORMAT
		 " %9" JSON_INTEGER_FORMAT " %9" JSON_INTEGER_FORMAT " %9" JSON_INTEGER_FORMAT
		 " %-10s %s",
		 json_integer_value(json_object_get(o, "count")),
		 json_integer_value(json_object_get(o, "connections")),
		 json_integer_value(json_object_get(o, "connection_limit")),
		 json_integer_value(json_object_get(o, "delivered")),
		 json_integer_value(json_object_get(o, "transfail")),
		 json_integer_value(json_object_get(o, "failed")),
		 json_is_true(json_object_get(o, "suspended"))	 ? "suspended"
		 : json_is_true(json_object_get(o, "throttled")) ? "throttled"
								 : "",
		 due);
}

static void draw_queues(struct kc_model *m, int y)
{
	struct kc_queue **rows;
	size_t n = kc_model_queue_rows(m, ui.qsort, ui.qinvert, &rows);
	char line[512], cells[256];
	kc_attr(0, A_BOLD);
	snprintf(line, sizeof(line), " Queues (%zu)  sort: %s%s", n,
		 ui.qsort == 0	 ? "kind"
		 : ui.qsort == 1 ? "name"
				 : "count",
		 ui.qinvert ? " (inverted)" : "");
	mvaddnstr(y++, 0, line, COLS);
	/* the name column fits the longest name (at least "Name", at most
	 * TEXT_COL_MAX): short names leave room, long ones are not cut early */
	int wn = 4;
	for (size_t i = 0; i < n; i++) {
		int l = (int)strlen(rows[i]->name);
		wn = l > wn ? (l > TEXT_COL_MAX ? TEXT_COL_MAX : l) : wn;
	}
	snprintf(line, sizeof(line), " %-9s %-*s %8s %13s %9s %9s %9s %-10s %s", "Kind", wn, "Name",
		 "Count", "Conns/Limit", "Delivered", "Transfail", "Failed", "State", "NextDue");
	kc_attr(0, A_BOLD | A_UNDERLINE);
	mvaddnstr(y++, 0, line, COLS);
	kc_attr(0, 0);
	clamp_sel(&ui.qsel, &ui.qtop, n, LINES - y);
	for (size_t i = ui.qtop; i < n && y < LINES; i++, y++) {
		queue_cells(rows[i]->obj, m->now, cells, sizeof(cells));
		snprintf(line, sizeof(line), " %-9.9s %-*.*s %s", rows[i]->kind, wn, wn,
			 rows[i]->name, cells);
		if (i == ui.qsel)
			kc_attr(PAIR_SEL, A_REVERSE * !ui.colors);
		put(y, 0, COLS, line);
		kc_attr(0, 0);
	}
	if (!n)
		mvaddnstr(y, 1, "(no queues reported)", COLS);
	free(rows);
}

static uint64_t lu(const char *k, json_t *o)
{
	return (uint64_t)json_integer_value(json_object_get(o, k));
}

static void draw_loop(struct kc_model *m, int y)
{
	json_t *l = m->loop;
	char line[512], a[16], b[16], c[16];
	kc_attr(0, A_BOLD);
	mvaddnstr(y++, 0, " Event loop", COLS);
	kc_attr(0, 0);
	if (!l) {
		mvaddnstr(y, 1, "(waiting for state)", COLS);
		return;
	}
	uint64_t iv = lu("interval_ns", l);
	double secs = iv ? (double)iv / 1e9 : 1;
	kc_fmt_dur(lu("longest_poll_ns", l), a, 16);
	snprintf(line, sizeof(line),
		 " Iterations/s %.0f   Busy %.1f%%   Polls/s %.0f   Longest callback (last "
		 "interval) %s in task %" PRIu64,
		 (double)lu("iterations_delta", l) / secs,
		 iv ? 100.0 * (double)lu("busy_ns", l) / (double)iv : 0.0,
		 (double)lu("polls_delta", l) / secs, a, lu("longest_poll_task", l));
	mvaddnstr(y++, 0, line, COLS);
	snprintf(line, sizeof(line),
		 " Iterations %" PRIu64 "   Polls %" PRIu64 "   Tasks %" PRIu64 " (live %" PRIu64
		 ", retained done %" PRIu64 ", %" PRIu64 " KiB, retention %" PRIu64 "s)",
		 lu("iterations", l), lu("polls", l), lu("tasks", l), lu("tasks_live", l),
		 lu("tasks_retained", l), lu("task_bytes", l) / 1024, lu("retention_s", l));
	mvaddnstr(y++, 0, line, COLS);
	kc_fmt_dur(lu("busy_ns", l), b, 16);
	kc_fmt_dur(lu("idle_ns", l), c, 16);
	snprintf(line, sizeof(line),
		 " Last interval: busy %s idle %s   Viewers %" PRIu64 "   Dropped events %" PRIu64,
		 b, c, lu("clients", l), lu("dropped_events", l));
	mvaddnstr(y++, 0, line, COLS);
	if (lu("busy_poll_us", l) || lu("busy_poll_windows", l)) {
		/* A busy-polling loop spends its waits polling, which counts as busy. */
		kc_fmt_dur(lu("busy_poll_tail_ns", l), a, 16);
		snprintf(line, sizeof(line),
			 " Busy poll %" PRIu64 "us (kumo.set_busy_poll): %" PRIu64
			 " windows, %s spun after their last input; Busy includes polling",
			 lu("busy_poll_us", l), lu("busy_poll_windows", l), a);
		mvaddnstr(y++, 0, line, COLS);
	}
	y++;
	draw_hist(y, "Callback durations (all tasks)", json_object_get(l, "poll_hist"));
}

/* --- a queue's messages and one message -------------------------------------- */

/* "+5m" until due, "due", or "-" when not scheduled (routed). */
static void fmt_due(uint64_t due_ms, uint64_t now, char *out, size_t cap)
{
	uint64_t due = due_ms * 1000000ull;
	if (!due_ms) {
		snprintf(out, cap, "-");
	} else if (due > now) {
		out[0] = '+';
		kc_fmt_dur(due - now, out + 1, cap - 1);
	} else {
		snprintf(out, cap, "due");
	}
}

/* The page's rows belong to the queue shown (a late answer for another
 * queue is ignored). */
static json_t *qpage_rows(struct kc_model *m)
{
	if (!m->qpage || strcmp(js(m->qpage, "queue"), ui.qname) != 0 ||
	    strcmp(js(m->qpage, "after"), ui.qafter) != 0)
		return NULL;
	return json_object_get(m->qpage, "messages");
}

static int text_w(json_t *rows, const char *key, int min, int cap)
{
	size_t i;
	json_t *r;
	int w = min;
	json_array_foreach(rows, i, r)
	{
		int l = (int)strlen(js(r, key));
		w = l > w ? l : w;
	}
	return w > cap ? cap : w;
}

static void draw_qmsgs(struct kc_model *m, int y)
{
	char line[1400], due[24], err[300];
	json_t *rows = qpage_rows(m);
	size_t n = json_array_size(rows);
	kc_attr(0, A_BOLD);
	snprintf(line, sizeof(line),
		 " Queue %s: %" PRIu64
		 " messages, page %u%s   [Enter message  ] next page  [ first "
		 "page  Esc back]",
		 ui.qname, rows ? ju(m->qpage, "count") : 0, ui.page,
		 rows && json_is_true(json_object_get(m->qpage, "more")) ? " (more follow)" : "");
	mvaddnstr(y++, 0, line, COLS);
	int ws = text_w(rows, "sender", 6, TEXT_COL_MAX), wr = text_w(rows, "recipient", 9, 40);
	snprintf(line, sizeof(line), " %-32s %-9s %8s %9s %8s %-*s %-*s %s", "ID", "State",
		 "Attempts", "NextDue", "Size", ws, "Sender", wr + 4, "Recipient", "LastError");
	kc_attr(0, A_BOLD | A_UNDERLINE);
	mvaddnstr(y++, 0, line, COLS);
	kc_attr(0, 0);
	if (!rows) {
		mvaddnstr(y, 1, "(waiting for the server; not shown when replaying)", COLS);
		return;
	}
	clamp_sel(&ui.msel, &ui.mtop, n, LINES - y);
	for (size_t i = ui.mtop; i < n && y < LINES; i++, y++) {
		json_t *r = json_array_get(rows, i);
		fmt_due(ju(r, "due_ms"), ju(m->qpage, "now"), due, sizeof(due));
		char rc[80];
		uint64_t more = ju(r, "rcpt_count") > 1 ? ju(r, "rcpt_count") - 1 : 0;
		snprintf(rc, sizeof(rc), more ? "%.*s +%" PRIu64 : "%.*s", wr, js(r, "recipient"),
			 more);
		snprintf(err, sizeof(err), "%s", *js(r, "last_error") ? js(r, "last_error") : "-");
		snprintf(line, sizeof(line),
			 " %-32.32s %-9s %8" PRIu64 " %9s %8" PRIu64 " %-*.*s %-*s %s", js(r, "id"),
			 js(r, "state"), ju(r, "attempts"), due, ju(r, "size"), ws, ws,
			 js(r, "sender"), wr + 4, rc, err);
		if (i == ui.msel)
			kc_attr(PAIR_SEL, A_REVERSE * !ui.colors);
		put(y, 0, COLS, line);
		kc_attr(0, 0);
	}
	if (!n)
		mvaddnstr(y, 1, "(no messages in this queue)", COLS);
}

static int draw_meta(json_t *meta, int y, int maxy)
{
	const char *k;
	json_t *v;
	char line[1024];
	json_object_foreach(meta, k, v)
	{
		if (y >= maxy)
			break;
		char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		snprintf(line, sizeof(line), "   %s = %s", k, s ? s : "?");
		free(s);
		put(y++, 0, COLS, line);
	}
	return y;
}

static void draw_message(struct kc_model *m, int y)
{
	char line[1024], due[24];
	json_t *f = m->message;
	kc_attr(0, A_BOLD);
	snprintf(line, sizeof(line), " Message %s   [Esc back]", ui.msg_id);
	mvaddnstr(y++, 0, line, COLS);
	kc_attr(0, 0);
	if (!f || strcmp(js(f, "message_id"), ui.msg_id) != 0) {
		mvaddnstr(y, 1, "(waiting for the server; not shown when replaying)", COLS);
		return;
	}
	json_t *msg = json_object_get(f, "message");
	if (json_is_object(msg)) {
		fmt_due(ju(msg, "due_ms"), ju(f, "now"), due, sizeof(due));
		snprintf(
		    line, sizeof(line),
		    " Queue %s   State %s   Attempts %" PRIu64 "   Next due %s   Size %" PRIu64
		    "%s",
		    js(msg, "queue"), js(msg, "state"), ju(msg, "attempts"), due, ju(msg, "size"),
		    json_is_true(json_object_get(msg, "data_resident")) ? "" : " (body in spool)");
		mvaddnstr(y++, 0, line, COLS);
		json_t *r0 = json_array_get(json_object_get(msg, "recipients"), 0);
		snprintf(line, sizeof(line), " From <%s>   Recipients (%" PRIu64 "): %s%s",
			 js(msg, "sender"), ju(msg, "rcpt_count"),
			 json_string_value(r0) ? json_string_value(r0) : "",
			 ju(msg, "rcpt_count") > 1 ? " ..." : "");
		put(y++, 0, COLS, line);
		snprintf(line, sizeof(line), " Last error: %s",
			 *js(msg, "last_error") ? js(msg, "last_error") : "-");
		put(y++, 0, COLS, line);
		mvaddnstr(y++, 0, " Meta:", COLS);
		y = draw_meta(json_object_get(msg, "meta"), y, y + 8);
	} else {
		mvaddnstr(y++, 0, " (no longer queued: the timeline is what is left)", COLS);
	}
	json_t *tl = json_object_get(f, "timeline");
	snprintf(line, sizeof(line), " Timeline (%zu entries%s%s)", json_array_size(tl),
		 ju(f, "timeline_dropped") ? ", earliest dropped" : "",
		 json_is_true(json_object_get(f, "timeline_finished")) ? ", finished" : "");
	kc_attr(0, A_BOLD);
	mvaddnstr(++y, 0, line, COLS);
	kc_attr(0, A_BOLD | A_UNDERLINE);
	snprintf(line, sizeof(line), " %-27s %10s %10s %-22s %s", "At", "Elapsed", "Delta", "Event",
		 "Detail");
	mvaddnstr(++y, 0, line, COLS);
	kc_attr(0, 0);
	y++;
	size_t i;
	json_t *e;
	json_array_foreach(tl, i, e)
	{
		if (y >= LINES)
			break;
		char a[16], b[16];
		kc_fmt_dur(ju(e, "elapsed_us") * 1000, a, sizeof(a));
		kc_fmt_dur(ju(e, "delta_us") * 1000, b, sizeof(b));
		snprintf(line, sizeof(line), " %-27s %10s %10s %-22s %s", js(e, "at"), a, b,
			 js(e, "event"), js(e, "detail"));
		put(y++, 0, COLS, line);
	}
}

size_t kc_tui_request(char *out, size_t cap)
{
	struct buf b;
	buf_init(&b);
	if (ui.view == KC_VIEW_QMSGS) {
		buf_appends(&b, "{\"cmd\":\"queue_messages\"");
		console_json_kv_str(&b, "queue", ui.qname);
		if (ui.qafter[0])
			console_json_kv_str(&b, "after", ui.qafter);
		console_json_kv_u64(&b, "limit", KC_PAGE_ROWS);
		buf_appends(&b, "}\n");
	} else if (ui.view == KC_VIEW_MESSAGE) {
		buf_appends(&b, "{\"cmd\":\"message\"");
		console_json_kv_str(&b, "message_id", ui.msg_id);
		buf_appends(&b, "}\n");
	}
	size_t n = b.len < cap ? b.len : 0;
	if (n)
		memcpy(out, b.data, n);
	if (n < cap)
		out[n] = '\0';
	buf_free(&b);
	return n;
}

static const char *const help_lines[] = {
    "Views:  t tasks   Q queues   L loop   Enter task details   ? help   Esc back   q quit",
    "        Enter on an smtp_server task: its envelope and latest transcript lines;",
    "        Enter on a scheduled queue (Q): its messages (next due, attempts, last error),",
    "          ] next page  [ first page;  Enter on a message: its metadata and timeline",
    "Table:  Left/Right or h/l sort column   i invert   Up/Down or k/j move   g top   G bottom",
    "        / filter (Enter keeps, Esc clears): words match name, kind, phase, state, fields;",
    "          kind:smtp_server  phase:Data  state:idle  wait:peer_read  name:127.0.0.1  id:7",
    "        n / N next / previous row    space pause / resume updates",
    "Replay: space pause   . step one frame   + / - speed",
    "",
    "Columns: Warn lint hits   ID task id   State RUNNING (in a callback), SCHED (woken, not yet",
    "  polled), IDLE (waiting), DONE (closed, kept for --retain-for)   Name, Kind   Phase the MTA",
    "  state set by its state machine   InPhase time in that phase   Total lifetime   Busy time",
    "  inside callbacks   Sched time woken but not yet running   Idle = Total - Busy - Sched",
    "  Polls callbacks run   Fields key=value facts (peer, listener, queue...)",
    "",
    "Lints (-W/-A NAME): long-callback (a callback took > 50ms: the loop stalled),",
    "  lost-wake (idle > 60s naming no wait reason), watchdog (in one phase with a wait",
    "  reason past --watchdog), self-wakes (more than half of its wakes were self-wakes)",
};

static void draw_help(int y)
{
	for (size_t i = 0; i < sizeof(help_lines) / sizeof(help_lines[0]) && y < LINES; i++)
		mvaddnstr(y++, 0, help_lines[i], COLS);
}

void kc_tui_draw(struct kc_model *m, const struct kc_tui_status *st)
{
	kc_model_refresh(m);
	erase();
	int y = draw_header(m, st);
	switch (ui.view) {
	case KC_VIEW_TASKS:
		draw_tasks(m, y);
		break;
	case KC_VIEW_DETAILS:
		draw_details(m, y);
		break;
	case KC_VIEW_QUEUES:
		draw_queues(m, y);
		break;
	case KC_VIEW_LOOP:
		draw_loop(m, y);
		break;
	case KC_VIEW_HELP:
		draw_help(y);
		break;
	case KC_VIEW_QMSGS:
		draw_qmsgs(m, y);
		break;
	case KC_VIEW_MESSAGE:
		draw_message(m, y);
		break;
	}
	refresh();
}

/* --- keys ------------------------------------------------------------------- */

static int filter_key(int ch)
{
	size_t n = strlen(ui.filter);
	if (ch == 27) {
		ui.filter[0] = '\0';
		ui.editing = 0;
	} else if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
		ui.editing = 0;
	} else if (ch == KEY_BACKSPACE || ch == 127 || ch == 8) {
		if (n)
			ui.filter[n - 1] = '\0';
	} else if (ch >= 32 && ch < 127 && n + 1 < sizeof(ui.filter)) {
		ui.filter[n] = (char)ch;
		ui.filter[n + 1] = '\0';
	}
	ui.sel = ui.top = 0;
	ui.sel_id = 0;
	return KC_KEY_NONE;
}

static void move_sel(long d)
{
	size_t *sel = ui.view == KC_VIEW_QUEUES	 ? &ui.qsel
		      : ui.view == KC_VIEW_QMSGS ? &ui.msel
						 : &ui.sel;
	if (d < 0 && (size_t)-d > *sel)
		*sel = 0;
	else
		*sel += (size_t)d;
	if (ui.view == KC_VIEW_TASKS)
		ui.sel_moved = 1;
}

static void sort_key(int d)
{
	if (ui.view == KC_VIEW_QUEUES) {
		ui.qsort = (ui.qsort + 3 + d) % 3;
		return;
	}
	ui.sort = (enum kc_col)((ui.sort + KC_COL__COUNT + d) % KC_COL__COUNT);
}

/* Enter on a scheduled queue: its first page of messages. */
static enum kc_key_result open_queue(struct kc_model *m)
{
	struct kc_queue **rows;
	size_t n = kc_model_queue_rows(m, ui.qsort, ui.qinvert, &rows);
	struct kc_queue *q = ui.qsel < n ? rows[ui.qsel] : NULL;
	int ok = q && !strcmp(q->kind, "scheduled") && strlen(q->name) < sizeof(ui.qname);
	if (ok) {
		snprintf(ui.qname, sizeof(ui.qname), "%s", q->name);
		ui.qafter[0] = '\0';
		ui.page = 1;
		ui.msel = ui.mtop = 0;
		ui.view = KC_VIEW_QMSGS;
	}
	free(rows);
	/* a ready queue's messages are listed under their scheduled queue */
	return ok ? KC_KEY_REQUEST : KC_KEY_NONE;
}

/* Enter on a message of the listing: the message view. */
static enum kc_key_result open_message(struct kc_model *m)
{
	json_t *r = json_array_get(qpage_rows(m), ui.msel);
	const char *id = json_string_value(json_object_get(r, "id"));
	if (!id || strlen(id) >= sizeof(ui.msg_id))
		return KC_KEY_NONE;
	snprintf(ui.msg_id, sizeof(ui.msg_id), "%s", id);
	ui.msg_back = KC_VIEW_QMSGS;
	ui.view = KC_VIEW_MESSAGE;
	return KC_KEY_REQUEST;
}

/* ] : the page after the one shown, when more follow. */
static enum kc_key_result next_page(struct kc_model *m)
{
	const char *after = qpage_rows(m) ? js(m->qpage, "next_after") : "";
	if (!*after || strlen(after) >= sizeof(ui.qafter))
		return KC_KEY_NONE;
	snprintf(ui.qafter, sizeof(ui.qafter), "%s", after);
	ui.page++;
	ui.msel = ui.mtop = 0;
	return KC_KEY_REQUEST;
}

static enum kc_key_result view_key(struct kc_model *m, int ch)
{
	switch (ch) {
	case 't':
		ui.view = KC_VIEW_TASKS;
		break;
	case 'Q':
		ui.view = KC_VIEW_QUEUES;
		break;
	case 'L':
		ui.view = KC_VIEW_LOOP;
		break;
	case '?':
		ui.prev_view = ui.view;
		ui.view = KC_VIEW_HELP;
		break;
	case 27:
		if (ui.view == KC_VIEW_DETAILS) {
			ui.view = KC_VIEW_TASKS;
			return KC_KEY_UNWATCH;
		}
		ui.view = ui.view == KC_VIEW_HELP      ? ui.prev_view
			  : ui.view == KC_VIEW_MESSAGE ? ui.msg_back
			  : ui.view == KC_VIEW_QMSGS   ? KC_VIEW_QUEUES
						       : KC_VIEW_TASKS;
		return ui.view == KC_VIEW_QMSGS ? KC_KEY_REQUEST : KC_KEY_NONE;
	case ']':
		return ui.view == KC_VIEW_QMSGS ? next_page(m) : KC_KEY_NONE;
	case '[':
		if (ui.view != KC_VIEW_QMSGS)
			return KC_KEY_NONE;
		ui.qafter[0] = '\0';
		ui.page = 1;
		ui.msel = ui.mtop = 0;
		return KC_KEY_REQUEST;
	case '\n':
	case '\r':
	case KEY_ENTER:
		if (ui.view == KC_VIEW_QUEUES)
			return open_queue(m);
		if (ui.view == KC_VIEW_QMSGS)
			return open_message(m);
		if (ui.view == KC_VIEW_TASKS) {
			struct kc_task **rows;
			size_t n = kc_model_rows(m, ui.filter, ui.sort, ui.invert, ui.ascii, &rows);
			resolve_sel(rows, n);
			free(rows);
		}
		if (ui.view == KC_VIEW_TASKS && ui.sel_id) {
			ui.watch_id = ui.sel_id;
			ui.view = KC_VIEW_DETAILS;
			return KC_KEY_WATCH;
		}
		break;
	default:
		return -1;
	}
	return KC_KEY_NONE;
}

static enum kc_key_result table_key(int ch)
{
	switch (ch) {
	case KEY_LEFT:
	case 'h':
		sort_key(-1);
		break;
	case KEY_RIGHT:
	case 'l':
		sort_key(1);
		break;
	case 'i':
		if (ui.view == KC_VIEW_QUEUES)
			ui.qinvert = !ui.qinvert;
		else
			ui.invert = !ui.invert;
		break;
	case KEY_UP:
	case 'k':
	case 'N':
		move_sel(-1);
		break;
	case KEY_DOWN:
	case 'j':
	case 'n':
		move_sel(1);
		break;
	case KEY_PPAGE:
		move_sel(-(LINES - 5));
		break;
	case KEY_NPAGE:
		move_sel(LINES - 5);
		break;
	case 'g':
	case KEY_HOME:
		move_sel(-(long)(1L << 40));
		break;
	case 'G':
	case KEY_END:
		move_sel(1L << 40);
		break;
	case '/':
		if (ui.view == KC_VIEW_TASKS)
			ui.editing = 1;
		break;
	}
	return KC_KEY_NONE;
}

enum kc_key_result kc_tui_keys(struct kc_model *m)
{
	int ch;
	while ((ch = getch()) != ERR) {
		if (ui.editing) {
			filter_key(ch);
			continue;
		}
		switch (ch) {
		case 'q':
		case 3: /* Ctrl-C */
		case 4: /* Ctrl-D */
			return KC_KEY_QUIT;
		case ' ':
			return KC_KEY_PAUSE;
		case '.':
			return KC_KEY_STEP;
		case '+':
			return KC_KEY_FASTER;
		case '-':
			return KC_KEY_SLOWER;
		}
		int r = view_key(m, ch);
		if (r > 0)
			return (enum kc_key_result)r;
		if (r < 0)
			table_key(ch);
	}
	return KC_KEY_NONE;
}
