// kiln console: applies server-sent updates to the page. Data is only ever
// set with textContent / createElement: names, reasons and log lines are
// untrusted text, never markup.
"use strict";

(function () {
  const MAX_LOG_LINES = 5000;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function stateBadge(state) {
    return el("span", "state state-" + String(state).toLowerCase(), state);
  }

  function setLive(text) {
    const live = document.getElementById("live");
    if (live) live.textContent = text;
  }

  // Lists (workflows, machines): one workflow changed.
  function onListWorkflow(wf) {
    for (const row of document.querySelectorAll("tr[data-wf]")) {
      if (row.dataset.wf !== wf.id) continue;
      const state = row.querySelector(".wf-state");
      if (state) state.replaceChildren(stateBadge(wf.state));
      const finished = row.querySelector(".wf-finished");
      if (finished) finished.textContent = wf.finished;
      const duration = row.querySelector(".wf-duration");
      if (duration) duration.textContent = wf.duration;
      const reason = row.querySelector(".wf-reason");
      if (reason) reason.textContent = wf.reason;
    }
    for (const row of document.querySelectorAll("tr[data-hw]")) {
      if (row.dataset.hw !== wf.hardware) continue;
      const id = row.querySelector(".wf-id");
      if (id) {
        const a = el("a", null, wf.id);
        a.setAttribute("href", "/workflows/" + encodeURIComponent(wf.id));
        id.replaceChildren(a);
      }
      const state = row.querySelector(".wf-state");
      if (state) state.replaceChildren(stateBadge(wf.state));
    }
    const table = document.getElementById("workflows");
    if (table && !document.querySelector('tr[data-wf="' + CSS.escape(wf.id) + '"]')) {
      const note = document.getElementById("new-workflows");
      if (note) {
        const n = Number(note.dataset.count || 0) + 1;
        note.dataset.count = String(n);
        note.textContent = "(" + n + " changed outside this page: reload to see them)";
        note.hidden = false;
      }
    }
  }

  // One workflow: its whole picture after a change.
  function onWorkflow(view) {
    const state = document.getElementById("wf-state");
    if (state) {
      state.textContent = view.state;
      state.className = "state state-" + view.state.toLowerCase();
    }
    for (const [id, key] of [["wf-reason", "reason"], ["wf-started", "started"], ["wf-finished", "finished"], ["wf-duration", "duration"]]) {
      const e = document.getElementById(id);
      if (e) e.textContent = view[key];
    }
    const retry = document.getElementById("retry-form");
    if (retry) retry.hidden = !view.retryable;
    for (const action of view.actions) {
      const section = document.querySelector('section[data-action="' + action.index + '"]');
      if (!section) continue;
      const badge = section.querySelector(".action-state");
      if (badge) {
        badge.textContent = action.state;
        badge.className = "action-state state state-" + action.state.toLowerCase();
      }
      const label = section.querySelector(".attempts-label");
      if (label) label.textContent = action.attempts_label;
      const body = section.querySelector("table.attempts tbody");
      if (body) {
        const rows = action.attempts.map(function (t) {
          const tr = el("tr");
          const cells = [t.number, t.agent, null, t.created, t.pulling, t.running, t.finished, t.duration, t.exit_code, t.reason, t.message];
          cells.forEach(function (c, i) {
            const td = el("td", null, i === 2 ? undefined : c);
            if (i === 2) td.appendChild(stateBadge(t.state));
            tr.appendChild(td);
          });
          return tr;
        });
        body.replaceChildren(...rows);
      }
    }
    const list = document.getElementById("artifacts");
    if (list) {
      list.replaceChildren(...view.artifacts.map(function (a) {
        const li = el("li");
        const link = el("a", "artifact", a.action + ": " + a.path);
        // Built by the server: a path on this origin.
        if (String(a.href).startsWith("/workflows/")) link.setAttribute("href", a.href);
        link.setAttribute("download", "");
        li.appendChild(link);
        li.appendChild(document.createTextNode(" (" + a.size + " bytes, sha256 "));
        li.appendChild(el("code", null, a.sha256));
        li.appendChild(document.createTextNode(")"));
        return li;
      }));
    }
  }

  function onLog(line) {
    const log = document.getElementById("log");
    if (!log) return;
    const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const div = el("div", line.stream === 2 ? "line stderr" : "line");
    div.appendChild(el("span", "log-action", line.name));
    div.appendChild(document.createTextNode(" " + line.text));
    log.appendChild(div);
    while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
    if (follow) log.scrollTop = log.scrollHeight;
  }

  function onProgress(p) {
    const section = document.querySelector('section[data-action="' + p.action + '"]');
    if (!section) return;
    const box = section.querySelector(".progress");
    const bar = section.querySelector("progress");
    const label = section.querySelector(".progress-label");
    if (!box || !bar) return;
    box.hidden = false;
    if (p.total) {
      bar.max = p.total;
      bar.value = Math.min(p.done, p.total);
      if (label) label.textContent = Math.floor((100 * p.done) / p.total) + "% (" + p.done + " of " + p.total + ")";
    } else {
      bar.removeAttribute("value");
      if (label) label.textContent = p.done + " done";
    }
  }

  function onAuditEvent(e) {
    const body = document.querySelector("#events tbody");
    if (!body) return;
    const tr = el("tr");
    for (const c of [e.time, e.kind, e.actor, e.peer, e.action, e.object, e.outcome, e.reason, e.count]) tr.appendChild(el("td", null, c));
    body.insertBefore(tr, body.firstChild);
  }

  function start() {
    const url = document.body.dataset.stream;
    if (!url || !window.EventSource) return;
    const source = new EventSource(url);
    const json = function (handler) {
      return function (msg) { handler(JSON.parse(msg.data)); };
    };
    source.addEventListener("hello", function () {
      const log = document.getElementById("log");
      if (log) log.replaceChildren();
      setLive("live");
    });
    source.addEventListener("workflow", json(onWorkflow));
    source.addEventListener("workflows", json(function (batch) {
      batch.changed.forEach(onListWorkflow);
      for (const id of batch.deleted) {
        const row = document.querySelector('tr[data-wf="' + CSS.escape(id) + '"]');
        if (row) row.classList.add("deleted");
      }
      if (batch.resync) setLive("live (some changes were missed: reload to see them)");
    }));
    source.addEventListener("log", json(onLog));
    source.addEventListener("progress", json(onProgress));
    source.addEventListener("event", json(onAuditEvent));
    source.addEventListener("end", function () { source.close(); setLive("finished"); });
    source.onerror = function () { setLive("reconnecting…"); };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
