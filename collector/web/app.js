// roomwatch status page: rooms, active alerts (ack / silence after login), what is down,
// 24-hour charts. Vanilla JS, no build step, nothing loaded from the internet.
// Data: GET /api/v1/rooms (this package), /api/v1/alerts, /api/v1/history (other parts of
// the collector; each shown as "not available" when the collector lacks it).
"use strict";

const I18N = {
  "zh-CN": {
    title: "机房监控", report: "巡检日报", login: "登录", logout: "退出", cancel: "取消", loading: "加载中…",
    rooms: "机房", alerts: "当前告警", down: "离线的采集端和设备", charts: "24 小时曲线",
    username: "用户名", password: "密码", duration: "时长", comment: "备注", silence: "静默", silenceTitle: "静默告警",
    ack: "确认", acked: "已确认", loginToAct: "登录后可确认或静默", loginToRead: "请先登录查看机房状态", notAvailable: "暂不可用",
    noRooms: "还没有任何机房的数据。", noAlerts: "没有告警。", nothingDown: "全部在线。",
    linkedGone: "通知里的这条告警已不在活动告警中（可能已恢复）。",
    temperature: "温度", humidity: "湿度", door: "门", ups: "UPS", leak: "漏水", smoke: "烟雾", devicesDown: "设备离线",
    open: "开", closed: "关", mains: "市电", battery: "电池供电", ok: "正常", alarm: "报警", minLeft: "分钟",
    agent: "采集端", device: "设备", since: "开始时间", state: "状态", alert: "告警", actions: "操作",
    firing: "告警中", pending: "待定", never: "从未上报", lastSeen: "最后上报",
    updated: "更新于", stale: "无法连接汇总服务", loginFailed: "用户名或密码错误", actionFailed: "操作失败",
    colourNote: "告警接口不可用：颜色按默认阈值显示。", noHistory: "历史数据暂不可用。", noData: "无数据",
    roomNoHistory: "{room}：历史曲线暂不可用",
    langButton: "English", ofN: "/", hoursAgo: "24 小时前", now: "现在",
    fallbackNote: "已由机房代理本地兜底通道（{kind}）于 {time} 通知", fallbackResolved: "，恢复通知于 {time} 发出",
    sms: "短信",
  },
  en: {
    title: "Server rooms", report: "Daily report", login: "Log in", logout: "Log out", cancel: "Cancel", loading: "Loading…",
    rooms: "Rooms", alerts: "Active alerts", down: "Agents and devices down", charts: "Last 24 hours",
    username: "User", password: "Password", duration: "Duration", comment: "Comment", silence: "Silence",
    silenceTitle: "Silence alert", ack: "Acknowledge", acked: "Acknowledged", loginToAct: "Log in to acknowledge or silence",
    loginToRead: "Log in to see the rooms",
    notAvailable: "not available", noRooms: "No data from any room yet.", noAlerts: "No alerts.", nothingDown: "Everything is up.",
    linkedGone: "The alert from the notification is no longer active (it may have resolved).",
    temperature: "Temperature", humidity: "Humidity", door: "Door", ups: "UPS", leak: "Leak", smoke: "Smoke",
    devicesDown: "Devices down", open: "open", closed: "closed", mains: "mains", battery: "on battery", ok: "ok",
    alarm: "ALARM", minLeft: "min", agent: "Agent", device: "Device", since: "Since", state: "State", alert: "Alert",
    actions: "Actions", firing: "firing", pending: "pending", never: "never pushed", lastSeen: "last push",
    updated: "Updated", stale: "Cannot reach the collector", loginFailed: "Wrong user or password",
    actionFailed: "Action failed", colourNote: "Alerts API not available: colours follow the default thresholds.",
    noHistory: "History not available.", noData: "no data", roomNoHistory: "{room}: history not available", langButton: "中文", ofN: "/", hoursAgo: "24 h ago", now: "now",
    fallbackNote: "notified by the agent's local fallback ({kind}) at {time}", fallbackResolved: "; resolution sent at {time}",
    sms: "SMS",
  },
};

// Default rule pack thresholds (alerts/defaults.yaml), used only when the alerts API is missing.
const LIMITS = { tempWarn: 27, tempCrit: 32, humLow: 0.20, humHigh: 0.80, runtimeLow: 600 };
const M = {
  temp: "roomwatch_temperature_celsius", hum: "roomwatch_humidity_ratio",
};

const state = {
  lang: localStorage.getItem("roomwatch.lang") || document.documentElement.dataset.defaultLang || "zh-CN",
  rooms: null, alerts: null, alertsAvailable: true, session: null, history: {}, historyAvailable: true, historyErrors: {},
  lastOk: 0, silenceTarget: null,
};
if (!I18N[state.lang]) state.lang = "zh-CN";

function t(key) { return (I18N[state.lang] && I18N[state.lang][key]) || I18N["zh-CN"][key] || key; }

// --- DOM helpers (text goes in as textContent: labels come from agents, never trusted as HTML) ---
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}
const $ = (id) => document.getElementById(id);

function fmtTime(sec) {
  if (!sec) return "—";
  const d = new Date(sec * 1000);
  return d.toLocaleString(state.lang === "en" ? "en-GB" : "zh-CN", { hour12: false });
}
function fmtNum(v, digits) { return v === null || v === undefined ? "—" : Number(v).toFixed(digits); }
function pct(v) { return v === null || v === undefined ? "—" : Math.round(v * 100) + "%"; }

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  return { ok: r.ok, status: r.status, data };
}

async function sendJSON(method, url, body) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (state.session && state.session.csrf) headers["X-CSRF-Token"] = state.session.csrf;
  const r = await fetch(url, { method, credentials: "same-origin", headers, body: body ? JSON.stringify(body) : undefined });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  return { ok: r.ok, status: r.status, data };
}

// --- alerts: tolerant of the alert engine's field names ---
function normAlert(a) {
  const labels = a.labels || {};
  const ack = a.ack || a.acknowledgement || null;
  return {
    id: a.id !== undefined ? String(a.id) : (a.fingerprint || ""),
    name: labels.alertname || a.alertname || a.name || "?",
    severity: labels.severity || a.severity || "warning",
    state: a.state || a.status || "firing",
    labels,
    summary: (a.annotations && (a.annotations.summary || a.annotations.description)) || a.summary || "",
    since: a.firedAt || a.activeSince || a.starts_at || a.startsAt || a.active_since || null,
    acked: Boolean(a.acked || a.acknowledged || (ack && (ack.by || ack.at || ack === true))),
    ackedBy: (ack && ack.by) || a.acked_by || "",
    fallback: a.fallback || null,
  };
}
// What the agent's local fallback already sent (alerts/fallback.py), in the page's language.
const SMS_TYPES = ["gsm_modem", "aliyun_sms", "tencent_sms"];
function fallbackNote(fb) {
  const kind = SMS_TYPES.includes(fb.channelType) ? t("sms") : (fb.channelType || fb.channel || "?");
  let text = t("fallbackNote").replace("{kind}", kind).replace("{time}", fmtTime(toSec(fb.firingAt)));
  if (fb.resolvedAt) text += t("fallbackResolved").replace("{time}", fmtTime(toSec(fb.resolvedAt)));
  return text;
}
function toSec(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "number") return v > 1e12 ? v / 1000 : v;
  const ms = Date.parse(v);
  return Number.isNaN(ms) ? null : ms / 1000;
}

function roomSeverity(room) {
  if (state.alertsAvailable && state.alerts) {
    let sev = "ok";
    for (const a of state.alerts) {
      const l = a.labels;
      const here = (l.room === room.room && (l.site || "") === room.site) ||
        (!l.room && l.agent && room.agents.includes(l.agent));
      if (!here) continue;
      if (a.state === "pending") { if (sev === "ok") sev = "pending"; continue; }
      if (a.severity === "info") continue; // for the record only: it does not colour the room
      if (a.severity === "critical") return "critical";
      sev = "warning";
    }
    return sev;
  }
  // No alert engine: colour by the default thresholds.
  const x = room.summary;
  if (x.leaks || x.smoke || x.ups_battery_low || (x.temperature_max !== null && x.temperature_max > LIMITS.tempCrit)) return "critical";
  if (x.doors_open || x.ups_on_battery || x.devices_down ||
      (x.temperature_max !== null && x.temperature_max > LIMITS.tempWarn) ||
      (x.humidity_min !== null && x.humidity_min < LIMITS.humLow) ||
      (x.humidity_max !== null && x.humidity_max > LIMITS.humHigh)) return "warning";
  return "ok";
}

// --- rendering ---
function renderStatic() {
  document.documentElement.lang = state.lang;
  document.title = "roomwatch · " + t("title");
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  $("lang-toggle").textContent = t("langButton");
}

function renderRooms() {
  const box = $("rooms");
  box.replaceChildren();
  if (!state.rooms) { box.append(h("p", { class: "muted" }, t("loading"))); return; }
  const rooms = state.rooms.rooms.filter((r) => r.devices.some((d) => d.series.length || d.up === false));
  if (!rooms.length) { box.append(h("p", { class: "muted" }, t("noRooms"))); return; }
  for (const room of rooms) {
    const x = room.summary;
    const sev = roomSeverity(room);
    const rows = [];
    if (x.temperature_max !== null) {
      const cls = x.temperature_max > LIMITS.tempCrit ? "bad" : x.temperature_max > LIMITS.tempWarn ? "warn" : "";
      rows.push([t("temperature"), h("dd", { class: "temp " + cls }, fmtNum(x.temperature_max, 1) + " °C")]);
    }
    if (x.humidity_min !== null) {
      const bad = x.humidity_min < LIMITS.humLow || x.humidity_max > LIMITS.humHigh;
      const text = x.humidity_min === x.humidity_max ? pct(x.humidity_min) : pct(x.humidity_min) + "–" + pct(x.humidity_max);
      rows.push([t("humidity"), h("dd", { class: "hum " + (bad ? "warn" : "") }, text)]);
    }
    if (x.doors) {
      const text = x.doors_open ? t("open") + (x.doors > 1 ? ` ${x.doors_open}${t("ofN")}${x.doors}` : "") : t("closed");
      rows.push([t("door"), h("dd", { class: "door " + (x.doors_open ? "warn" : "") }, text)]);
    }
    if (x.ups) {
      let text = x.ups_on_battery ? t("battery") : t("mains");
      if (x.ups_charge_min !== null) text += " · " + pct(x.ups_charge_min);
      if (x.ups_on_battery && x.ups_runtime_min !== null) text += " · " + Math.round(x.ups_runtime_min / 60) + " " + t("minLeft");
      rows.push([t("ups"), h("dd", { class: "ups " + (x.ups_battery_low ? "bad" : x.ups_on_battery ? "warn" : "") }, text)]);
    }
    if (x.leaks) rows.push([t("leak"), h("dd", { class: "leak bad" }, t("alarm"))]);
    if (x.smoke) rows.push([t("smoke"), h("dd", { class: "smoke bad" }, t("alarm"))]);
    if (x.devices_down) rows.push([t("devicesDown"), h("dd", { class: "devdown warn" }, `${x.devices_down}${t("ofN")}${x.devices}`)]);
    box.append(h("article", { class: "tile " + sev, "data-room": `${room.site}/${room.room}`, "data-severity": sev },
      h("div", { class: "site" }, room.site || "—"),
      h("h3", {}, room.room || room.agents.join(", ")),
      h("dl", {}, rows.map(([k, dd]) => [h("dt", {}, k), dd]))));
  }
  $("colour-note").hidden = state.alertsAvailable;
}

function where(labels) {
  return [labels.site, labels.room, labels.device || labels.agent, labels.sensor].filter(Boolean).join(" / ");
}

// Notifications link to "#/alerts/<id>" (alerts/templates.py): that alert's row is marked and scrolled to.
function linkedAlert() {
  const m = /^#\/alerts\/(.+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

function renderAlerts() {
  const box = $("alerts");
  box.replaceChildren();
  const linked = linkedAlert();
  if (linked && state.alerts && !state.alerts.some((a) => a.id === linked)) {
    box.append(h("p", { class: "muted linked-gone" }, t("linkedGone")));
  }
  if (!state.alertsAvailable) { box.append(h("p", { class: "muted", id: "alerts-na" }, t("notAvailable"))); return; }
  if (!state.alerts) { box.append(h("p", { class: "muted" }, t("loading"))); return; }
  if (!state.alerts.length) { box.append(h("p", { class: "muted", id: "no-alerts" }, t("noAlerts"))); return; }
  const logged = Boolean(state.session);
  const rows = state.alerts.map((a) => h("tr", { "data-alert-id": a.id, "data-alertname": a.name,
    class: a.id === linked ? "linked" : "" },
    h("td", {}, h("span", { class: "sev " + a.severity }, a.severity), " ", h("strong", {}, a.name),
      a.summary ? h("div", { class: "muted small" }, a.summary) : null,
      a.fallback ? h("div", { class: "muted small fallback-note" }, fallbackNote(a.fallback)) : null),
    h("td", {}, where(a.labels)),
    h("td", { class: a.acked ? "acked" : a.state === "pending" ? "state-pending" : "" },
      a.acked ? t("acked") + (a.ackedBy ? ` (${a.ackedBy})` : "") : t(a.state === "pending" ? "pending" : "firing")),
    h("td", {}, fmtTime(toSec(a.since))),
    h("td", { class: "actions" },
      logged && !a.acked && a.id ? h("button", { type: "button", class: "ack primary", onclick: () => ack(a) }, t("ack")) : null,
      logged ? h("button", { type: "button", class: "silence", onclick: () => openSilence(a) }, t("silence")) : null)));
  box.append(h("table", { id: "alerts-table" },
    h("thead", {}, h("tr", {}, [t("alert"), t("device"), t("state"), t("since"), t("actions")].map((x) => h("th", {}, x)))),
    h("tbody", {}, rows)));
  if (!logged) box.append(h("p", { class: "muted small" }, t("loginToAct")));
  const row = box.querySelector("tr.linked");
  if (row && state.scrolledTo !== linked) {  // once per link: the 5 s refresh must not pull the page back
    row.scrollIntoView({ block: "center" });
    state.scrolledTo = linked;
  }
}

function renderDown() {
  const box = $("down");
  box.replaceChildren();
  if (!state.rooms) return;
  const items = [];
  for (const a of state.rooms.down.agents) {
    items.push(h("li", { class: "down-agent", "data-agent": a.id }, `${t("agent")} ${a.id}`,
      h("span", { class: "muted" }, " — " + (a.last_push ? `${t("lastSeen")} ${fmtTime(a.last_push)}` : t("never")))));
  }
  for (const d of state.rooms.down.devices) {
    items.push(h("li", { class: "down-device", "data-device": d.device }, `${t("device")} ${d.device}`,
      h("span", { class: "muted" }, ` — ${[d.site, d.room, d.agent].filter(Boolean).join(" / ")}` +
        (d.since ? ` · ${t("since")} ${fmtTime(d.since)}` : ""))));
  }
  box.append(items.length ? h("ul", {}, items) : h("p", { class: "muted", id: "nothing-down" }, t("nothingDown")));
}

// --- 24-hour charts: own SVG line chart, threshold lines of the default rule pack ---
// The plot is 280 viewBox units wide: 288 points (one per 5 minutes) is about one per unit, so the
// collector downsamples (GET /api/v1/history?step=300s, averages per bucket) instead of sending
// every reading (a sensor read every 5 s is 17,280 samples a day).
const HISTORY_STEP = 86400 / 288;
function lineChart(samples, opts) {
  const W = 320, H = 120, L = 34, R = 6, T = 6, B = 16;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title });
  const end = opts.end, start = end - 86400;
  const vals = samples.map((p) => p[1]);
  let lo = Math.min(...vals, ...(opts.lines || []).map((l) => l.v)), hi = Math.max(...vals, ...(opts.lines || []).map((l) => l.v));
  if (opts.fixed) [lo, hi] = opts.fixed;
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const x = (ts) => L + (Math.max(0, ts - start) / 86400) * (W - L - R); // the first bucket may begin before start
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  svg.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.append(s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (const v of [lo + pad, hi - pad]) svg.append(s("text", { x: L - 3, y: y(v) + 3, "text-anchor": "end" }, opts.fmt(v)));
  svg.append(s("text", { x: L, y: H - 3 }, t("hoursAgo")));
  svg.append(s("text", { x: W - R, y: H - 3, "text-anchor": "end" }, t("now")));
  for (const l of opts.lines || []) {
    if (l.v < lo || l.v > hi) continue;
    svg.append(s("line", { class: l.cls, x1: L, x2: W - R, y1: y(l.v), y2: y(l.v) }));
  }
  // Break the line where samples are missing for more than 10 minutes (an outage is not a slope).
  const maxGap = Math.max(600, 2 * HISTORY_STEP);
  let d = "", prev = null, run = [];
  const dots = (pts) => { if (pts.length === 1) svg.append(s("circle", { class: "dot", cx: x(pts[0][0]), cy: y(pts[0][1]), r: 2 })); };
  for (const [ts, v] of samples) {
    if (ts < start - HISTORY_STEP) continue;
    const gap = prev === null || ts - prev > maxGap;
    if (gap) { dots(run); run = []; }
    d += (gap ? "M" : "L") + x(ts).toFixed(1) + " " + y(v).toFixed(1) + " ";
    run.push([ts, v]);
    prev = ts;
  }
  dots(run); // a lone sample has no line to draw: show it as a dot
  if (d) svg.append(s("path", { class: "line", d }));
  return svg;
}

function roomKey(room) { return `${room.site}/${room.room}`; }

// One room's charts: {entries} or {error}; {disabled} when the collector keeps no history (404).
// Each room is asked separately, so a room whose query fails (too many sensors for
// history.max_samples, a timeout) loses only its own charts.
async function loadRoomHistory(room, start, end) {
  const entries = {};
  for (const metric of [M.temp, M.hum]) {
    const has = room.devices.some((d) => d.series.some((x) => x.metric === metric));
    if (!has) continue;
    const q = new URLSearchParams({ metric, start: String(Math.floor(start)), end: String(Math.ceil(end)),
      step: HISTORY_STEP + "s" });
    if (room.site) q.set("site", room.site);
    if (room.room) q.set("room", room.room);
    let r;
    try { r = await getJSON("/api/v1/history?" + q.toString()); } catch (e) { r = { ok: false, status: 0, data: null }; }
    if (r.status === 404) return { disabled: true };
    if (!r.ok || !r.data || !Array.isArray(r.data.series)) {
      return { error: (r.data && r.data.error) || (r.status ? `HTTP ${r.status}` : String(t("stale"))) };
    }
    for (const series of r.data.series) {
      const l = series.labels || {};
      const key = [metric, l.site, l.room, l.agent, l.device, l.sensor].join("|");
      entries[key] = { metric, labels: l, samples: series.samples || [] };
    }
  }
  return { entries };
}

async function loadHistory() {
  if (!state.rooms) return;
  const end = Date.now() / 1000, start = end - 86400;
  const out = {}, errors = {};
  for (const room of state.rooms.rooms) {
    const got = await loadRoomHistory(room, start, end);
    if (got.disabled) { state.historyAvailable = false; renderCharts(); return; }
    const label = [room.site, room.room].filter(Boolean).join(" / ") || room.agents.join(", ");
    if (got.error) errors[roomKey(room)] = { label, error: got.error };
    else Object.assign(out, got.entries);
  }
  state.historyAvailable = true;
  state.history = out;
  state.historyErrors = errors;
  state.historyEnd = end;
  renderCharts();
}

function renderCharts() {
  const box = $("charts");
  box.replaceChildren();
  if (!state.historyAvailable) { box.append(h("p", { class: "muted", id: "history-na" }, t("noHistory"))); return; }
  for (const [key, e] of Object.entries(state.historyErrors).sort()) {
    box.append(h("p", { class: "muted history-error", "data-room": key, title: e.error }, t("roomNoHistory").replace("{room}", e.label)));
  }
  const entries = Object.values(state.history).sort((a, b) => where(a.labels).localeCompare(where(b.labels)) || a.metric.localeCompare(b.metric));
  for (const e of entries) {
    const temp = e.metric === M.temp;
    const title = `${temp ? t("temperature") : t("humidity")} · ${where(e.labels)}`;
    const card = h("figure", { class: "chart", "data-metric": e.metric, "data-device": e.labels.device || "" }, h("h4", {}, title));
    if (!e.samples.length) card.append(h("p", { class: "muted" }, t("noData")));
    else card.append(lineChart(e.samples, {
      title, end: state.historyEnd,
      fmt: temp ? (v) => v.toFixed(0) + "°" : (v) => Math.round(v * 100) + "%",
      lines: temp ? [{ v: LIMITS.tempWarn, cls: "warnline" }, { v: LIMITS.tempCrit, cls: "critline" }]
        : [{ v: LIMITS.humLow, cls: "warnline" }, { v: LIMITS.humHigh, cls: "warnline" }],
      fixed: temp ? null : [0, 1],
    }));
    box.append(card);
  }
}

// --- session, ack, silence: POST /login gives an HttpOnly session cookie and a CSRF token that every
// change sends back in X-CSRF-Token (collector/webauth.py); GET /api/v1/session restores it on reload.
async function loadSession() {
  const r = await getJSON("/api/v1/session");
  state.session = r.ok && r.data && r.data.user ? { user: r.data.user, csrf: r.data.csrf_token || r.data.csrf || "" } : null;
  renderSession();
}
function renderSession() {
  $("user").textContent = state.session ? state.session.user : "";
  // No web users configured: nobody can log in, so no login button.
  $("login-open").hidden = Boolean(state.session) || Boolean(state.rooms && state.rooms.login === false);
  $("logout").hidden = !state.session;
  renderAlerts();
}

async function login(ev) {
  ev.preventDefault();
  const f = ev.target;
  $("login-error").hidden = true;
  const r = await sendJSON("POST", "/login", { username: f.username.value, password: f.password.value });
  if (!r.ok) { $("login-error").textContent = t("loginFailed"); $("login-error").hidden = false; return; }
  f.password.value = "";
  $("login-dialog").close();
  if (r.data && r.data.user) state.session = { user: r.data.user, csrf: r.data.csrf_token || r.data.csrf || "" };
  else await loadSession();
  renderSession();
  await refresh();  // with web.read_access: login the data comes only now
}

async function logout() {
  await sendJSON("POST", "/logout");
  state.session = null;
  renderSession();
}

async function ack(alert) {
  const r = await sendJSON("POST", `/api/v1/alerts/${encodeURIComponent(alert.id)}/ack`, { comment: "" });
  if (!r.ok) { showBanner(`${t("actionFailed")}: ${r.status}`); if (r.status === 401) await loadSession(); return; }
  await refresh();
}

function openSilence(alert) {
  state.silenceTarget = alert;
  $("silence-what").textContent = `${alert.name} · ${where(alert.labels)}`;
  $("silence-error").hidden = true;
  $("silence-dialog").showModal();
}

async function silence(ev) {
  ev.preventDefault();
  const a = state.silenceTarget;
  const f = ev.target;
  // Alertmanager-style matcher texts: name="value" (JSON string quoting escapes quotes and backslashes).
  const matchers = [`alertname=${JSON.stringify(a.name)}`];
  for (const k of ["site", "room", "agent", "device", "sensor"]) if (a.labels[k]) matchers.push(`${k}=${JSON.stringify(a.labels[k])}`);
  const r = await sendJSON("POST", "/api/v1/silences", { matchers, duration: f.duration.value, comment: f.comment.value });
  if (!r.ok) { $("silence-error").textContent = `${t("actionFailed")}: ${r.status}`; $("silence-error").hidden = false; return; }
  $("silence-dialog").close();
  await refresh();
}

function showBanner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = !text;
}

// --- refresh loop ---
async function refresh() {
  try {
    const [rooms, alerts] = await Promise.all([getJSON("/api/v1/rooms"), getJSON("/api/v1/alerts?lang=" + encodeURIComponent(state.lang))]);
    if (rooms.ok) { state.rooms = rooms.data; state.lastOk = Date.now(); showBanner(""); }
    else if (rooms.status === 401) showBanner(t("loginToRead"));  // web.read_access: login
    if (alerts.status === 404 || alerts.status === 405) state.alertsAvailable = false;
    else if (alerts.ok && alerts.data) {
      const list = Array.isArray(alerts.data) ? alerts.data : alerts.data.alerts || [];
      state.alertsAvailable = true;
      state.alerts = list.map(normAlert).filter((a) => a.state !== "resolved" && a.state !== "inactive");
    }
  } catch (e) {
    showBanner(t("stale"));
  }
  $("login-open").hidden = Boolean(state.session) || Boolean(state.rooms && state.rooms.login === false);
  $("updated").textContent = state.lastOk ? `${t("updated")} ${fmtTime(state.lastOk / 1000)}` : "";
  renderRooms();
  renderAlerts();
  renderDown();
}

function setLang(lang) {
  state.lang = lang;
  localStorage.setItem("roomwatch.lang", lang);
  renderStatic();
  renderRooms();
  renderAlerts();
  renderDown();
  renderCharts();
  refresh();
}

function start() {
  renderStatic();
  $("lang-toggle").addEventListener("click", () => setLang(state.lang === "en" ? "zh-CN" : "en"));
  window.addEventListener("hashchange", renderAlerts);
  $("login-open").addEventListener("click", () => { $("login-error").hidden = true; $("login-dialog").showModal(); });
  $("login-cancel").addEventListener("click", () => $("login-dialog").close());
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("silence-form").addEventListener("submit", silence);
  $("silence-cancel").addEventListener("click", () => $("silence-dialog").close());
  loadSession();
  refresh().then(loadHistory);
  setInterval(refresh, 5000);
  setInterval(loadHistory, 60000);
}

start();
