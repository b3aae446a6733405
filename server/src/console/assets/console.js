// PBS Cloud console: the only script of the console (the Content-Security-Policy allows no
// inline script). Pages work without it; it renews the ticket while a page stays open and
// follows the log of a running task.
"use strict";

(function () {
  const RENEW_EVERY_MS = 10 * 60 * 1000;

  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : null;
  }

  function setCsrf(token) {
    const meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) meta.content = token;
    document.querySelectorAll('input[name="CSRFPreventionToken"]').forEach(function (i) {
      i.value = token;
    });
  }

  // Ticket renewal: the server swaps the HttpOnly cookie for a fresh ticket.
  async function renew() {
    const token = csrf();
    if (!token) return;
    const resp = await fetch("/console/renew", {
      method: "POST",
      credentials: "same-origin",
      headers: { CSRFPreventionToken: token },
    });
    if (resp.status === 403) {
      window.location.assign("/console/login?next=" + encodeURIComponent(window.location.pathname));
      return;
    }
    if (resp.ok) {
      const body = await resp.json();
      setCsrf(body.data.CSRFPreventionToken);
    }
  }

  // Follows a running task's log through the API until the task ends.
  async function follow(pre) {
    const upid = pre.dataset.upid;
    let next = parseInt(pre.dataset.next, 10) || 0;
    const base = "/api2/json/nodes/localhost/tasks/" + encodeURIComponent(upid);
    for (;;) {
      // `start` is a line number (lines count from 1): the first line not shown yet.
      const resp = await fetch(base + "/log?test-status=1&limit=0&start=" + (next + 1), {
        credentials: "same-origin",
      });
      if (!resp.ok) return;
      const body = await resp.json();
      for (const line of body.data) {
        pre.appendChild(document.createTextNode(line.t + "\n"));
        next = line.n;
      }
      if (!body.active) {
        const st = await fetch(base + "/status", { credentials: "same-origin" });
        if (st.ok) {
          const s = (await st.json()).data;
          document.getElementById("task-status").textContent =
            s.status + " " + (s.exitstatus || "");
        }
        const stop = document.getElementById("stop-task-form");
        if (stop) stop.hidden = true;
        pre.dataset.running = "false";
        return;
      }
      await new Promise(function (r) { setTimeout(r, 1000); });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (csrf()) setInterval(renew, RENEW_EVERY_MS);
    const log = document.getElementById("task-log");
    if (log && log.dataset.running === "true") follow(log);
  });
})();
