"""The collector's live event debugger: one self-contained page (plain HTML, CSS and JavaScript).

It loads nothing from anywhere: the page listens to the collector's ``GET /events`` (server-sent events)
and draws what arrives, newest first. Every value is put on the page as text, never as HTML.
"""

from __future__ import annotations

__all__ = ["PAGE"]

_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dreamdata-logging collector</title>
<link rel="icon" href="data:,">
<style>
  :root { --ok: #1b7f3b; --bad: #b3261e; --warn: #9a5b00; --line: #d9d9de; --muted: #666; }
  body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #1c1c1e; }
  header { display: flex; gap: 1em; align-items: baseline; padding: .6em 1em; background: #f3f3f6;
           border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 2; flex-wrap: wrap; }
  header h1 { font-size: 15px; margin: 0; }
  #state.live { color: var(--ok); } #state.down { color: var(--bad); }
  #counts, #held { color: var(--muted); }
  main { display: flex; gap: 1em; padding: 0 1em 1em; align-items: flex-start; }
  #lists { flex: 1 1 auto; min-width: 0; }
  h2 { font-size: 14px; margin: 1em 0 .4em; }
  h2 small { color: var(--muted); font-weight: normal; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid var(--line); vertical-align: top;
           max-width: 22em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  td.reason { white-space: normal; }
  th { background: #fafafa; position: sticky; top: 2.6em; }
  #messages tbody tr { cursor: pointer; }
  #messages tbody tr:hover { background: #f0f4ff; }
  #messages tbody tr.selected { background: #dce6ff; }
  tr.refused td.verdict { color: var(--bad); }
  tr.accepted td.verdict { color: var(--ok); }
  tr.accepted.flagged td.verdict { color: var(--warn); }
  #requests td.status { color: var(--bad); font-weight: bold; }
  #detail { flex: 0 0 38%; position: sticky; top: 3.2em; max-height: calc(100vh - 4em); overflow: auto;
            border: 1px solid var(--line); padding: .5em; background: #fcfcfd; }
  #detail pre { white-space: pre-wrap; word-break: break-all; margin: 0; }
  #detail-reason { color: var(--bad); }
  .empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<header>
  <h1>dreamdata-logging collector</h1>
  <span id="state">connecting&hellip;</span>
  <span id="counts"></span>
  <label>Filter <input id="filter" type="search" placeholder="any text in the message or reason"></label>
  <label>Type <select id="type">
    <option value="">all</option><option>track</option><option>identify</option><option>page</option>
    <option>screen</option><option>group</option><option>alias</option>
  </select></label>
  <label><input id="refused-only" type="checkbox"> refused only</label>
  <label><input id="plan-only" type="checkbox"> breaking the tracking plan only</label>
  <button id="pause" type="button">Pause</button>
  <span id="held"></span>
  <button id="clear" type="button">Clear</button>
</header>
<main>
  <div id="lists">
    <h2>Messages <small>newest first; click one to see its JSON</small></h2>
    <table id="messages">
      <thead><tr><th>received</th><th>type</th><th>event / name</th><th>userId</th><th>anonymousId</th>
        <th>messageId</th><th>accepted / refused / tracking plan</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="no-messages" class="empty">No messages yet. Point a handler (or <code>dreamdata-logging send</code>)
      at this collector's <code>/v1/batch</code>.</p>
    <h2>Refused requests <small>refused before any message was read: auth, size, JSON, path</small></h2>
    <table id="requests">
      <thead><tr><th>received</th><th>status</th><th>method</th><th>path</th><th>bytes</th><th>reason</th></tr></thead>
      <tbody></tbody>
    </table>
  </div>
  <aside id="detail" hidden>
    <button id="detail-close" type="button">Close</button>
    <p id="detail-reason"></p>
    <pre id="detail-json"></pre>
  </aside>
</main>
<script>
"use strict";
(function () {
  var MAX_ROWS = 5000, MAX_HELD = 2000;
  var $ = function (id) { return document.getElementById(id); };
  var messages = document.querySelector("#messages tbody");
  var requests = document.querySelector("#requests tbody");
  var filterBox = $("filter"), typeBox = $("type"), refusedBox = $("refused-only"), planBox = $("plan-only");
  var paused = false, held = [], lastId = 0, accepted = 0, refused = 0, flagged = 0, badRequests = 0;
  var selected = null;

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    td.title = text;
    if (cls) { td.className = cls; }
    tr.appendChild(td);
  }

  function visible(tr) {
    var text = filterBox.value.trim().toLowerCase();
    if (typeBox.value && tr.dataset.type !== typeBox.value) { return false; }
    if (refusedBox.checked && tr.dataset.status !== "refused") { return false; }
    if (planBox.checked && !tr.dataset.plan) { return false; }
    return !text || tr.dataset.text.indexOf(text) !== -1;
  }

  function applyFilters() {
    var rows = messages.rows;
    for (var i = 0; i < rows.length; i++) { rows[i].hidden = !visible(rows[i]); }
  }

  function trim(body) {
    while (body.rows.length > MAX_ROWS) { body.deleteRow(body.rows.length - 1); }
  }

  function showDetail(tr) {
    if (selected) { selected.classList.remove("selected"); }
    selected = tr;
    tr.classList.add("selected");
    var text = tr.dataset.json;
    try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* shown as received */ }
    $("detail-json").textContent = text;
    $("detail-reason").textContent = tr.dataset.status === "refused" ? "refused: " + tr.dataset.reason :
      tr.dataset.plan ? "accepted, but breaks the tracking plan: " + tr.dataset.plan : "";
    $("detail").hidden = false;
  }

  function addEntry(entry) {
    if (entry.id <= lastId) { return; }
    lastId = entry.id;
    var req = entry.request;
    if (req.level) {
      badRequests++;
      var r = document.createElement("tr");
      cell(r, entry.time); cell(r, String(req.status), "status"); cell(r, req.method); cell(r, req.path);
      cell(r, String(req.size)); cell(r, req.reason, "reason");
      requests.insertBefore(r, requests.firstChild);
      trim(requests);
    }
    entry.rows.forEach(function (row) {
      var tr = document.createElement("tr");
      var plan = row.plan || "";
      tr.className = row.status + (plan ? " flagged" : "");
      tr.dataset.type = row.type;
      tr.dataset.status = row.status;
      tr.dataset.reason = row.reason;
      tr.dataset.plan = plan;
      tr.dataset.json = row.json;
      tr.dataset.text = (row.json + " " + row.reason + " " + plan).toLowerCase();
      cell(tr, entry.time); cell(tr, row.type); cell(tr, row.name); cell(tr, row.userId);
      cell(tr, row.anonymousId); cell(tr, row.messageId);
      cell(tr, row.status !== "accepted" ? "refused: " + row.reason :
        plan ? "accepted; breaks the tracking plan: " + plan : "accepted", "verdict reason");
      tr.hidden = !visible(tr);
      messages.insertBefore(tr, messages.firstChild);
      if (row.status === "accepted") { accepted++; } else { refused++; }
      if (plan) { flagged++; }
    });
    trim(messages);
    $("no-messages").hidden = messages.rows.length > 0;
    $("counts").textContent = accepted + " accepted, " + refused + " refused messages" +
      (flagged ? " (" + flagged + " breaking the tracking plan)" : "") + "; " + badRequests + " refused requests";
  }

  function showHeld() {
    $("held").textContent = paused ? held.length + " batch(es) waiting" : "";
  }

  messages.addEventListener("click", function (event) {
    var tr = event.target.closest("tr");
    if (tr) { showDetail(tr); }
  });
  $("detail-close").addEventListener("click", function () {
    $("detail").hidden = true;
    if (selected) { selected.classList.remove("selected"); selected = null; }
  });
  filterBox.addEventListener("input", applyFilters);
  typeBox.addEventListener("change", applyFilters);
  refusedBox.addEventListener("change", applyFilters);
  planBox.addEventListener("change", applyFilters);
  $("pause").addEventListener("click", function () {
    paused = !paused;
    $("pause").textContent = paused ? "Resume" : "Pause";
    if (!paused) { held.splice(0).forEach(addEntry); }
    showHeld();
  });
  $("clear").addEventListener("click", function () {
    messages.textContent = ""; requests.textContent = ""; held = [];
    accepted = refused = flagged = badRequests = 0;
    $("counts").textContent = ""; $("no-messages").hidden = false; showHeld();
  });

  var source = new EventSource("events");
  source.addEventListener("open", function () { $("state").textContent = "live"; $("state").className = "live"; });
  source.addEventListener("error", function () {
    $("state").textContent = "disconnected, retrying";
    $("state").className = "down";
  });
  source.addEventListener("batch", function (event) {
    var entry = JSON.parse(event.data);
    if (paused) {
      held.push(entry);
      if (held.length > MAX_HELD) { held.shift(); }
      showHeld();
    } else {
      addEntry(entry);
    }
  });
})();
</script>
</body>
</html>
"""

#: The page as served at ``GET /``.
PAGE = _HTML.encode("utf-8")
