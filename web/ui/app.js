// pillarbox console: plain DOM, no framework. Everything shown is set as
// text (textContent, never markup), and every change carries the login's
// CSRF token; the server checks both anyway.
"use strict";

const S = { user: null, admin: false, csrf: null, timer: null };
const $ = (sel) => document.querySelector(sel);

// el("td", {class: "x"}, "text", child...) - children are nodes or text.
function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) n.addEventListener(ev, fn);
    else if (v !== false && v !== null && v !== undefined) n.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined)
    n.append(k instanceof Node ? k : String(k));
  return n;
}

function svg(tag, attrs, ...kids) {
  const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  for (const k of kids) n.append(k instanceof Node ? k : String(k));
  return n;
}

class ApiError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(method, path, body) {
  const opt = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") opt.headers["X-CSRF-Token"] = S.csrf || "";
  if (body !== undefined) {
    opt.headers["Content-Type"] = "application/json";
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(path, opt);
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (r.status === 401 && path !== "/api/login") { showLogin(); throw new ApiError(401, "login required"); }
  if (!r.ok) throw new ApiError(r.status, (data && data.error) || r.statusText);
  return data;
}

function bytes(n) {
  if (n < 1024) return n + " B";
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return n.toFixed(n < 10 ? 1 : 0) + " " + u[i];
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m " + (s % 60) + "s";
}

function flash(box, ok, text) {
  box.replaceChildren(el("div", { class: "flash " + (ok ? "ok" : "bad"), role: "status" }, text));
}

// Runs a change and reports it in box; then re-renders the page, which
// shows the report again at its top.
async function change(box, what, fn) {
  try {
    await fn();
    S.flash = what;
    render();
  } catch (e) {
    if (e.status !== 401) flash(box, false, e.message);
  }
}

function table(heads, rows, opt) {
  return el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, heads.map((h, i) =>
      el("th", { class: opt && opt.includes(i) ? "opt" : null }, h)))),
    el("tbody", {}, rows)));
}

function page(title, ...kids) {
  const v = $("#view"), note = el("div", { id: "flash" });
  if (S.flash) flash(note, true, S.flash);
  S.flash = null;
  // Kids may be lists (one per domain, say) or null, as el() takes them.
  v.replaceChildren(el("h1", {}, title), note,
    ...kids.flat(Infinity).filter((k) => k !== null && k !== undefined));
  return v;
}

// --- login ----------------------------------------------------------------

function showLogin() {
  clearInterval(S.timer);
  S.user = S.csrf = null;
  $("#nav").hidden = true;
  $("#view").hidden = true;
  $("#login").hidden = false;
  $("#login-user").focus();
}

function loggedIn(me) {
  S.user = me.user; S.admin = me.admin; S.csrf = me.csrf;
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#view").hidden = false;
  for (const a of document.querySelectorAll("#nav [data-admin]")) a.hidden = !S.admin;
  if (!location.hash || location.hash === "#/") location.hash = S.admin ? "#/dashboard" : "#/password";
  render();
}


function setup() {
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    try {
      loggedIn(await api("POST", "/api/login", {
        user: $("#login-user").value, password: $("#login-pass").value }));
      $("#login-pass").value = "";
    } catch (e) {
      $("#login-error").textContent = e.message;
    }
  });
  $("#logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } catch (e) { /* gone anyway */ }
    location.hash = "";
    showLogin();
  });
  window.addEventListener("hashchange", render);
  api("GET", "/api/session").then(loggedIn, () => showLogin());
}

// --- pages ----------------------------------------------------------------

const pages = {
  async dashboard() {
    const st = await api("GET", "/api/status");
    const t = st.totals;
    const card = (k, v, id) => el("div", { class: "card" },
      el("div", { class: "k" }, k), el("div", { class: "v", id }, v));
    page("Dashboard",
      el("p", { class: "note" }, st.hostname + " · pillarbox " + st.version +
        " · up " + duration(st.uptime)),
      el("div", { class: "cards" },
        card("Connections now", st.connections, "stat-connections"),
        card("Accepted", t.accepted, "stat-accepted"),
        card("Retrieved", t.retrieved, "stat-retrieved"),
        card("Delivered", t.delivered, "stat-delivered"),
        card("Bounced", t.bounced, "stat-bounced"),
        card("Rejected", t.rejected, "stat-rejected"),
        card("Failed logins", t.auth_failures, "stat-auth-failures"),
        card("Queue", st.queue, "stat-queue"),
        card("Messages stored", st.messages, "stat-messages"),
        card("Store size", bytes(st.store_bytes), "stat-store"),
        card("Disk free", bytes(st.disk_free), "stat-disk")),
      el("h2", {}, "Messages per hour, last 24 hours"),
      chart(st.hourly),
      el("div", { class: "legend" }, el("span", { class: "in" }, "received"),
        el("span", { class: "out" }, "retrieved + delivered")),
      el("h2", {}, "Listeners"),
      table(["Protocol", "Address", "Connections"], st.listeners.map((l) =>
        el("tr", {}, el("td", {}, l.proto), el("td", { class: "mono" }, l.address),
          el("td", {}, l.connections)))));
    S.timer = setInterval(() => { if (location.hash === "#/dashboard") render(); }, 5000);
  },

  async users() {
    const { users } = await api("GET", "/api/users");
    const box = el("div");
    const f = el("form", { id: "add-user" },
      el("label", {}, "Address", el("input", { id: "add-user-address", type: "email", required: true, placeholder: "name@domain" })),
      el("label", {}, "Password", el("input", { id: "add-user-password", type: "password", required: true, autocomplete: "new-password" })),
      el("label", {}, "Quota (MiB, 0 = none)", el("input", { id: "add-user-quota", type: "number", min: 0, value: 0 })),
      el("label", { class: "check" }, el("input", { id: "add-user-admin", type: "checkbox" }), "admin"),
      el("button", { class: "primary", type: "submit", id: "add-user-submit" }, "Add user"));
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const address = $("#add-user-address").value;
      change(box, "Added " + address, () => api("POST", "/api/users", {
        address, password: $("#add-user-password").value,
        admin: $("#add-user-admin").checked,
        quota: Math.round(Number($("#add-user-quota").value || 0) * 1048576) }));
    });
    const act = (u, label, fn, cls) => el("button", { type: "button", class: cls || null,
      "data-action": label.toLowerCase(), on: { click: fn } }, label);
    const path = (u) => "/api/users/" + encodeURIComponent(u.address);
    // used / quota, as the store counts it (what POP3's STAT says); a
    // mailbox at its quota takes no more mail until some is deleted
    const usage = (u) => bytes(u.used) + " / " + (u.quota ? bytes(u.quota) : "no quota") +
      (u.quota && u.used >= u.quota ? " (full)" : "");
    page("Users", box, f, table(["Address", "Admin", "Used / quota", "Messages", ""],
      users.map((u) => el("tr", { "data-address": u.address },
        el("td", {}, u.address), el("td", {}, u.admin ? "yes" : ""),
        el("td", { class: u.quota && u.used >= u.quota ? "full" : null }, usage(u)),
        el("td", {}, u.messages),
        el("td", { class: "actions" },
          act(u, "Password", () => {
            const p = prompt("New password for " + u.address);
            if (p) change(box, "Password changed", () => api("POST", path(u) + "/password", { password: p }));
          }),
          act(u, "Rename", () => {
            const to = prompt("New address for " + u.address, u.address);
            if (to && to !== u.address) change(box, "Renamed to " + to, () => api("POST", path(u) + "/rename", { address: to }));
          }),
          act(u, "Quota", () => {
            const q = prompt("Quota in MiB for " + u.address + " (0 = none)", u.quota / 1048576);
            if (q !== null) change(box, "Quota set", () => api("POST", path(u) + "/quota", { quota: Math.round(Number(q) * 1048576) }));
          }),
          act(u, u.admin ? "Revoke admin" : "Make admin", () =>
            change(box, "Updated " + u.address, () => api("POST", path(u) + "/admin", { admin: !u.admin }))),
          act(u, "Delete", () => {
            if (confirm("Delete " + u.address + " and all its mail?"))
              change(box, "Deleted " + u.address, () => api("DELETE", path(u)));
          }, "danger"))))));
  },

  async aliases() {
    const { aliases } = await api("GET", "/api/aliases");
    const box = el("div");
    const f = el("form", {},
      el("label", {}, "Alias", el("input", { id: "add-alias", type: "email", required: true })),
      el("label", {}, "Delivers to (comma-separated users)", el("input", { id: "add-alias-targets", required: true })),
      el("button", { class: "primary", type: "submit" }, "Add alias"));
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const targets = $("#add-alias-targets").value.split(",").map((s) => s.trim()).filter(Boolean);
      change(box, "Added alias", () => api("POST", "/api/aliases", { alias: $("#add-alias").value, targets }));
    });
    page("Aliases", box, f, table(["Alias", "Delivers to", ""], aliases.map((a) =>
      el("tr", {}, el("td", {}, a.alias), el("td", {}, a.targets.join(", ")),
        el("td", { class: "actions" }, el("button", { type: "button", class: "danger", on: { click: () => {
          if (confirm("Delete alias " + a.alias + "?"))
            change(box, "Deleted " + a.alias, () => api("DELETE", "/api/aliases/" + encodeURIComponent(a.alias)));
        } } }, "Delete"))))));
  },

  async domains() {
    const { domains } = await api("GET", "/api/domains");
    const box = el("div");
    const f = el("form", {},
      el("label", {}, "Domain", el("input", { id: "add-domain", required: true, placeholder: "example.org" })),
      el("button", { class: "primary", type: "submit" }, "Add domain"));
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      change(box, "Added domain", () => api("POST", "/api/domains", { domain: $("#add-domain").value }));
    });
    page("Domains", box, f, table(["Domain", "From", ""], domains.map((d) =>
      el("tr", {}, el("td", {}, d.domain), el("td", {}, d.configured ? "config file" : "console / CLI"),
        el("td", { class: "actions" }, d.configured ? "" : el("button", { type: "button", class: "danger", on: { click: () => {
          if (confirm("Delete domain " + d.domain + "?"))
            change(box, "Deleted " + d.domain, () => api("DELETE", "/api/domains/" + encodeURIComponent(d.domain)));
        } } }, "Delete"))))),
    el("p", { class: "note" }, "See DNS for the records each domain needs."));
  },

  async queue() {
    const { queue } = await api("GET", "/api/queue");
    const box = el("div");
    // A message's entries are neighbours (the queue is kept by id): one
    // row per recipient, the message's id, sender and actions once.
    const msgs = [];
    for (const q of queue) {
      const last = msgs[msgs.length - 1];
      if (last && last.id === q.id) last.rcpts.push(q);
      else msgs.push({ id: q.id, sender: q.sender, rcpts: [q] });
    }
    const count = (m) => m.rcpts.length + (m.rcpts.length === 1 ? " recipient" : " recipients");
    const act = (label, cls, fn) => el("button", { type: "button", class: cls,
      "data-action": label.toLowerCase(), on: { click: fn } }, label);
    const actions = (m) => {
      const path = "/api/queue/" + m.id;
      return [
        act("Retry", null, () => change(box, "Retrying " + m.id + " now (" + count(m) + ")",
          () => api("POST", path + "/retry"))),
        act("Bounce", null, () => {
          if (confirm("Return message " + m.id + " (" + count(m) + ") to " +
              (m.sender ? m.sender : "its sender - it has none (<>), so it is just dropped") + "? It will not be sent."))
            change(box, "Bounced " + m.id + " (" + count(m) + ")", () => api("POST", path + "/bounce"));
        }),
        act("Delete", "danger", () => {
          if (confirm("Delete message " + m.id + " (" + count(m) + ")? It will not be sent, and nobody is told."))
            change(box, "Deleted " + m.id + " (" + count(m) + ")", () => api("DELETE", path));
        })];
    };
    page("Outbound queue", box,
      queue.length === 0 ? el("p", {}, "The queue is empty.") :
        table(["Id", "From", "To", "Attempts", "Next attempt", "Last error", ""], msgs.flatMap((m) =>
          m.rcpts.map((q, i) => {
            const span = { rowspan: m.rcpts.length };
            return el("tr", { "data-id": m.id },
              i ? null : el("td", { class: "mono", ...span }, m.id),
              i ? null : el("td", span, m.sender || "<>"),
              el("td", {}, q.recipient), el("td", {}, q.attempts), el("td", {}, q.next_attempt),
              el("td", {}, q.last_error),
              i ? null : el("td", { class: "actions", ...span }, actions(m)));
          }))));
  },

  async grants() {
    const { grants } = await api("GET", "/api/grants");
    page("POP-before-SMTP grants",
      el("p", { class: "note" }, "A POP3 login lets its address send mail through this server for a while."),
      grants.length === 0 ? el("p", {}, "No live grants.") :
        table(["Client", "User", "Expires (UTC)", "Seconds left"], grants.map((g) =>
          el("tr", {}, el("td", { class: "mono" }, g.client), el("td", {}, g.user),
            el("td", {}, g.expires), el("td", {}, g.seconds_left)))));
  },

  async log() {
    const q = new URLSearchParams(location.hash.split("?")[1] || "");
    const params = new URLSearchParams();
    for (const k of ["sid", "address"]) if (q.get(k)) params.set(k, q.get(k));
    const { lines } = await api("GET", "/api/log?" + params);
    const f = el("form", {},
      el("label", {}, "Session id", el("input", { id: "log-sid", value: q.get("sid") || "" })),
      el("label", {}, "Address", el("input", { id: "log-address", value: q.get("address") || "" })),
      el("button", { class: "primary", type: "submit" }, "Filter"));
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      if ($("#log-sid").value) p.set("sid", $("#log-sid").value);
      if ($("#log-address").value) p.set("address", $("#log-address").value);
      location.hash = "#/log?" + p;
    });
    const pre = el("pre", { class: "log", id: "log-lines" });
    for (const l of lines) {
      const m = / sid=([0-9a-f]+)/.exec(l);
      if (m) {
        const i = l.indexOf(m[0]) + 5;
        pre.append(l.slice(0, i), el("a", { href: "#/log?sid=" + m[1] }, m[1]), l.slice(i + m[1].length), "\n");
      } else {
        pre.append(l + "\n");
      }
    }
    page("Log", f, el("p", { class: "note" }, lines.length + " lines (the newest last)"), pre);
  },

  // The records show at once; then each domain is checked in turn (the
  // server takes a few checks at a time), filling in the Seen column.
  async dns() {
    const d = await api("GET", "/api/dns");
    const domains = d.domains.map((x) => {
      const rows = new Map(), note = el("p", { class: "note dns-note" }, "");
      const tbl = table(["Type", "Name", "Value", "Seen now", "Why"], x.records.map((r) => {
        const seen = el("td", { class: "dns-status" }, "not checked yet");
        rows.set(r.type + " " + r.name, seen);
        return el("tr", { "data-type": r.type, "data-name": r.name },
          el("td", {}, r.type), el("td", { class: "mono" }, r.name),
          el("td", { class: "mono" }, r.value), seen, el("td", { class: "opt" }, r.why));
      }), [4]);
      const again = el("button", { type: "button", "data-action": "check", "data-domain": x.domain,
        on: { click: () => dnsCheck(x.domain, rows, note, again) } }, "Check again");
      return { domain: x.domain, rows, note, again,
        nodes: [el("h2", {}, x.domain, " ", again), note, tbl] };
    });
    page("DNS records",
      el("p", { class: "note" }, "Publish these at your DNS provider for each domain. " +
        "“Seen now” is what this server's resolver returns for each one."),
      domains.map((x) => x.nodes));
    for (const x of domains) {
      if (!x.note.isConnected) return;  // another page is shown now
      await dnsCheck(x.domain, x.rows, x.note, x.again);
    }
  },

  async password() {
    const box = el("div");
    const f = el("form", { id: "password-form" },
      el("label", {}, "New password for " + S.user,
        el("input", { id: "new-password", type: "password", required: true, autocomplete: "new-password" })),
      el("button", { class: "primary", type: "submit" }, "Change password"));
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      change(box, "Password changed", () => api("POST", "/api/users/" +
        encodeURIComponent(S.user) + "/password", { password: $("#new-password").value }));
    });
    page("Password", box, f);
  },
};

// What the resolver returns for one domain's records, into their rows'
// Seen cells: the status in words (the colour only repeats it).
async function dnsCheck(domain, rows, note, button) {
  button.disabled = true;
  for (const td of rows.values()) { td.className = "dns-status"; td.textContent = "checking…"; }
  try {
    const c = await api("GET", "/api/dns/check?domain=" + encodeURIComponent(domain));
    for (const r of c.records) {
      const td = rows.get(r.type + " " + r.name);
      if (!td) continue;
      const more = r.status === "differs" ? ": found " + r.found.join(" | ") +
        (r.error ? " (" + r.error + ")" : "") : r.error ? ": " + r.error : "";
      td.className = "dns-status " + r.status;
      td.textContent = r.status + more;
    }
    note.textContent = "Checked at " + new Date().toLocaleTimeString() + " with resolver " + c.resolver + ".";
  } catch (e) {
    if (e.status === 401) return;
    for (const td of rows.values()) { td.className = "dns-status unknown"; td.textContent = "unknown: " + e.message; }
    note.textContent = "";
  } finally {
    button.disabled = false;
  }
}

// Bars for the hourly series: received above, sent on (retrieved +
// delivered) beside it.
function chart(h) {
  const W = 720, H = 170, pad = 20, n = h.received.length, bw = (W - 2 * pad) / n;
  const out = h.retrieved.map((v, i) => v + h.delivered[i]);
  const max = Math.max(1, ...h.received, ...out);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", id: "chart", role: "img",
    "aria-label": "messages per hour" });
  for (let i = 0; i < n; i++) {
    const x = pad + i * bw;
    for (const [v, cls, dx] of [[h.received[i], "in", 1], [out[i], "out", bw / 2]]) {
      const bh = (H - 2 * pad) * v / max;
      const r = svg("rect", { x: x + dx, y: H - pad - bh, width: Math.max(1, bw / 2 - 1.5), height: bh,
        class: cls, "data-count": v });
      r.append(svg("title", {}, v + (cls === "in" ? " received" : " sent on")));
      s.append(r);
    }
    if (i % 3 === 0 || i === n - 1) {
      const hour = new Date((h.start + i * 3600) * 1000).getHours();
      s.append(svg("text", { x: x + 1, y: H - 4 }, String(hour).padStart(2, "0") + "h"));
    }
  }
  s.append(svg("text", { x: 4, y: 15 }, "max " + max));
  return s;
}

async function render() {
  clearInterval(S.timer);
  if (!S.user) return;
  const name = (location.hash.slice(2).split("?")[0]) || (S.admin ? "dashboard" : "password");
  for (const a of document.querySelectorAll("#nav a"))
    a.classList.toggle("active", a.getAttribute("href") === "#/" + name);
  const fn = pages[name] && (S.admin || name === "password") ? pages[name] : null;
  if (!fn) { page("Not found", el("p", {}, "No such page.")); return; }
  try {
    await fn();
  } catch (e) {
    if (e.status !== 401) page("Error", el("p", { class: "error" }, e.message));
  }
}

setup();
