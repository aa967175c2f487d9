// Muster control panel: applies the pushed view updates in place, asks for
// confirmation before an action, follows a log. No dependencies.
"use strict";
(function () {
  const view = document.body.dataset.view;
  const main = document.getElementById("view");
  const live = document.getElementById("live");
  const csrfMeta = document.querySelector('meta[name="muster-csrf"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  function setLive(state, text) {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  }

  // morph updates the live DOM node `from` to look like `to`, keeping the
  // nodes that stay (so focus, scroll and open controls survive): children
  // with an id are matched by id, the others by position and kind.
  function morph(from, to) {
    if (from.nodeType !== 1) {
      if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
      return;
    }
    if (from.tagName === "SELECT" && (document.activeElement === from || from.dataset.busy)) return;
    syncAttrs(from, to);
    morphChildren(from, to);
    if (from.tagName === "SELECT") {
      const sel = from.querySelector("option[selected]");
      if (sel) from.value = sel.value;
    }
  }
  function syncAttrs(from, to) {
    for (const a of Array.from(from.attributes)) {
      if (!to.hasAttribute(a.name)) from.removeAttribute(a.name);
    }
    for (const a of Array.from(to.attributes)) {
      if (from.getAttribute(a.name) !== a.value) from.setAttribute(a.name, a.value);
    }
  }
  function same(a, b) {
    return a.nodeType === b.nodeType && a.nodeName === b.nodeName;
  }
  function morphChildren(from, to) {
    const byId = new Map();
    for (const c of from.childNodes) if (c.nodeType === 1 && c.id) byId.set(c.id, c);
    let cur = from.firstChild;
    for (const n of Array.from(to.childNodes)) {
      let match = null;
      if (n.nodeType === 1 && n.id) {
        const m = byId.get(n.id);
        if (m && same(m, n)) match = m;
      } else if (cur && same(cur, n) && !(cur.nodeType === 1 && cur.id)) {
        match = cur;
      }
      if (match) {
        if (match === cur) cur = cur.nextSibling;
        else from.insertBefore(match, cur);
        morph(match, n);
      } else {
        from.insertBefore(n, cur);
      }
    }
    while (cur) {
      const next = cur.nextSibling;
      from.removeChild(cur);
      cur = next;
    }
  }

  // Live updates: one Server-Sent Events stream per page, at most one
  // update a second.
  function listen() {
    if (!window.EventSource || !main || !["overview", "hosts", "services", "replicas"].includes(view)) return;
    const es = new EventSource("/api/events?view=" + encodeURIComponent(view));
    es.addEventListener("view", (e) => {
      const t = document.createElement("template");
      t.innerHTML = e.data;
      const next = t.content.firstElementChild;
      const cur = main.firstElementChild;
      if (next && cur && same(cur, next)) morph(cur, next);
      else if (next) main.replaceChildren(next);
      setLive("live", "Live");
    });
    es.addEventListener("signin", () => { es.close(); location.href = "/login?next=" + encodeURIComponent(location.pathname); });
    es.onerror = () => setLive("stale", "Reconnecting…");
    es.onopen = () => setLive("live", "Live");
  }

  // Confirmation dialog: resolves true when the user confirms.
  const dlg = document.getElementById("confirm");
  function ask(title, text, verb, danger) {
    return new Promise((resolve) => {
      if (!dlg || !dlg.showModal) { resolve(window.confirm(title + "\n\n" + text)); return; }
      document.getElementById("confirm-title").textContent = title;
      document.getElementById("confirm-text").textContent = text;
      const ok = document.getElementById("confirm-ok");
      ok.textContent = verb || "Confirm";
      ok.classList.toggle("danger", !!danger);
      dlg.returnValue = "";
      dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
      dlg.showModal();
      document.getElementById("confirm-cancel").focus();
    });
  }

  const toast = document.getElementById("toast");
  let toastTimer = 0;
  function say(text, bad) {
    if (!toast) return;
    toast.textContent = text;
    toast.classList.toggle("bad", !!bad);
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toast.hidden = true; }, bad ? 9000 : 5000);
  }

  async function act(op, body) {
    try {
      const r = await fetch("/api/actions/" + op, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Muster-CSRF": csrf },
        body: JSON.stringify(body),
      });
      const j = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
      if (!r.ok || j.error) { say(j.error || ("failed: " + r.status), true); return false; }
      say(j.message || "done");
      return true;
    } catch (err) {
      say("The panel did not answer: " + err, true);
      return false;
    }
  }

  document.addEventListener("click", async (e) => {
    const b = e.target.closest("button[data-op]");
    if (!b || b.disabled) return;
    e.preventDefault();
    const ok = await ask(b.dataset.title, b.dataset.confirm, b.dataset.verb, b.classList.contains("danger") || b.classList.contains("warn"));
    if (ok) {
      b.disabled = true;
      await act(b.dataset.op, { target: b.dataset.target });
      b.disabled = false;
    }
    b.focus();
  });

  document.addEventListener("change", async (e) => {
    const s = e.target.closest("select[data-op]");
    if (!s) return;
    const prev = s.dataset.current, next = s.value;
    if (prev === next) return;
    s.dataset.busy = "1";
    const ok = await ask("Change the placement of " + s.dataset.target + "?",
      "From " + (prev || "the default") + " to " + next + ": the leading broker places its next replicas by this scheme.", "Change");
    if (!ok || !(await act("placement", { target: s.dataset.target, scheme: next }))) s.value = prev;
    else s.dataset.current = next;
    delete s.dataset.busy;
    s.focus();
  });

  // Log view: follow the log, one request a second at most.
  function followLog() {
    const pre = document.getElementById("log");
    const follow = document.getElementById("follow");
    const size = document.getElementById("log-size");
    if (!pre || !pre.dataset.host) return;
    pre.scrollTop = pre.scrollHeight;
    let busy = false;
    setInterval(async () => {
      if (busy || !follow.checked || document.hidden) return;
      busy = true;
      try {
        const q = new URLSearchParams({ host: pre.dataset.host, replica: pre.dataset.replica, offset: pre.dataset.offset });
        const r = await fetch("/api/log?" + q, { credentials: "same-origin" });
        if (r.ok) {
          const j = await r.json();
          const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          if (j.restart) pre.textContent = "";
          if (j.text) pre.append(j.text);
          pre.dataset.offset = j.end;
          if (size) size.textContent = j.size_text;
          if (atEnd) pre.scrollTop = pre.scrollHeight;
          setLive("live", "Live");
        } else setLive("stale", "Log unavailable");
      } catch (err) {
        setLive("stale", "Reconnecting…");
      } finally { busy = false; }
    }, 1000);
  }

  listen();
  followLog();
})();
