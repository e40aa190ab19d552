// SPDX-License-Identifier: Apache-2.0
// The mail catcher UI. Every value from a message is placed with textContent
// (never innerHTML), HTML mail renders from /api/v1/message/ID/html in an
// iframe sandboxed without scripts and under its own CSP.
"use strict";

const PAGE = 50;
const state = { start: 0, query: "", id: null, total: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function addr(a) {
  if (!a) return "";
  return a.Name ? a.Name + " <" + a.Address + ">" : a.Address;
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r;
}

async function loadList() {
  const q = state.query;
  const path = q
    ? "/api/v1/search?query=" + encodeURIComponent(q) + "&start=" + state.start + "&limit=" + PAGE
    : "/api/v1/messages?start=" + state.start + "&limit=" + PAGE;
  const res = await (await api(path)).json();
  state.total = res.messages_count;
  const rows = $("rows");
  rows.replaceChildren();
  for (const m of res.messages) {
    const tr = el("tr", undefined, "msg" + (m.Read ? "" : " unread") + (m.ID === state.id ? " selected" : ""));
    tr.dataset.id = m.ID;
    tr.append(el("td", addr(m.From)), el("td", (m.To || []).map(addr).join(", ")),
      el("td", m.Subject), el("td", new Date(m.Created).toLocaleString()), el("td", String(m.Size)));
    tr.addEventListener("click", () => openMessage(m.ID));
    rows.append(tr);
  }
  $("empty").hidden = res.messages.length > 0;
  const last = Math.min(state.start + res.count, state.total);
  $("range").textContent = (res.count ? state.start + 1 : 0) + "-" + last + " of " + state.total;
  $("prev").disabled = state.start === 0;
  $("next").disabled = last >= state.total;
}

function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.id === "tab-" + name);
}

function kvRows(table, pairs) {
  table.replaceChildren();
  for (const [k, v] of pairs) {
    const tr = el("tr");
    tr.append(el("th", k), el("td", v));
    table.append(tr);
  }
}

async function openMessage(id) {
  state.id = id;
  const m = await (await api("/api/v1/message/" + encodeURIComponent(id))).json();
  $("view-pane").hidden = false;
  $("v-subject").textContent = m.Subject || "(no subject)";
  kvRows($("v-summary"), [["From", addr(m.From)], ["To", (m.To || []).map(addr).join(", ")],
    ["Cc", (m.Cc || []).map(addr).join(", ")], ["Date", m.Date], ["Tags", (m.Tags || []).join(", ")],
    ["Envelope", (m.Envelope.From || "<>") + " \u2192 " + m.Envelope.To.join(", ")], ["Size", String(m.Size)]]);
  $("v-text").textContent = m.Text;
  $("v-html").src = m.HTML ? "/api/v1/message/" + encodeURIComponent(id) + "/html" : "about:blank";
  $("raw-link").href = "/api/v1/message/" + encodeURIComponent(id) + "/raw";
  $("eml-link").href = "/api/v1/message/" + encodeURIComponent(id) + "/raw?dl=1";
  $("eml-link").setAttribute("download", id + ".eml");
  const headers = await (await api("/api/v1/message/" + encodeURIComponent(id) + "/headers")).json();
  const pairs = [];
  for (const [k, vs] of Object.entries(headers)) for (const v of vs) pairs.push([k, v]);
  kvRows($("v-headers"), pairs);
  $("v-raw").textContent = await (await api("/api/v1/message/" + encodeURIComponent(id) + "/raw")).text();
  const sess = m.Session || {};
  const spairs = [["Client", m.Envelope.Peer || ""]];
  if (sess.Lines) {
    spairs.push(["EHLO", sess.Ehlo], ["TLS", sess.Tls || "none"]);
    if (sess.Dropped) spairs.push(["", sess.Dropped + " earlier lines not kept"]);
    for (const t of sess.Lines) spairs.push(["+" + t.Ms + " ms " + (t.Dir === "C" ? "C:" : "S:"), t.Line]);
  } else {
    spairs.push(["Transcript", "not recorded"]);
  }
  kvRows($("v-session"), spairs);
  const atts = $("v-attachments");
  atts.replaceChildren();
  for (const a of m.Attachments) atts.append(el("li", (a.FileName || "(unnamed)") + " \u2014 " + a.ContentType + ", " + a.Size + " bytes"));
  const links = $("v-links");
  links.replaceChildren();
  for (const l of m.Links) links.append(el("li", l));
  for (const c of m.Codes) links.append(el("li", "code " + c));
  showTab(m.HTML ? "html" : "text");
  loadList();
}

async function deleteOne() {
  if (!state.id) return;
  await api("/api/v1/message/" + encodeURIComponent(state.id), { method: "DELETE" });
  closeView();
}

async function deleteAll() {
  if (!confirm("Delete all messages?")) return;
  await api("/api/v1/messages", { method: "DELETE" });
  closeView();
}

function closeView() {
  state.id = null;
  $("view-pane").hidden = true;
  $("v-html").src = "about:blank";
  loadList();
}

function live() {
  const es = new EventSource("/api/v1/events");
  let pending = null;
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; loadList(); }, 100);
  };
  es.addEventListener("open", () => $("live").classList.add("on"));
  es.addEventListener("error", () => $("live").classList.remove("on"));
  es.addEventListener("message", refresh);
  es.addEventListener("delete", (ev) => {
    const d = JSON.parse(ev.data);
    if (d.ID === state.id) closeView(); else refresh();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.query = $("search").value.trim();
    state.start = 0;
    loadList();
  });
  $("prev").addEventListener("click", () => { state.start = Math.max(0, state.start - PAGE); loadList(); });
  $("next").addEventListener("click", () => { state.start += PAGE; loadList(); });
  $("close").addEventListener("click", closeView);
  $("delete-one").addEventListener("click", deleteOne);
  $("delete-all").addEventListener("click", deleteAll);
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  loadList();
  live();
});
