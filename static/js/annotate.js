// The annotation page: keyboard-first rating, a draft kept in localStorage until the server
// has it, and a submit that retries by itself when the network or the server fails.
(() => {
  "use strict";
  const root = document.getElementById("annotate");
  const cfg = JSON.parse(document.getElementById("annotate-config").textContent);
  const ids = cfg.completionIds;
  const attributes = cfg.attributes;
  const draftKey = `studio-draft-${cfg.assignment}`;
  const csrf = root.querySelector("input[name=csrfmiddlewaretoken]").value;
  const statusEl = document.getElementById("save-status");
  const errorsEl = root.querySelector("[data-errors]");
  const commentEl = root.querySelector("[data-comment]");
  const tieEl = root.querySelector("[data-tie]");

  const newToken = () =>
    (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/-/g, "");

  // A draft left by an earlier visit (a failed submit, a closed tab) wins over the server's
  // copy: it is newer. Its token is kept, so that a retried submission is recognised.
  let state = null;
  try {
    state = JSON.parse(localStorage.getItem(draftKey));
  } catch (e) {
    state = null;
  }
  const restored = Boolean(state);
  if (!state) {
    state = { ...cfg.initial, token: newToken() };
    state.scores = state.scores || {};
  }
  let cursor = { col: 0, row: 0 };
  let sending = false;
  let retryTimer = null;

  const saveDraft = () => localStorage.setItem(draftKey, JSON.stringify(state));
  const setStatus = (text, kind) => {
    statusEl.textContent = text;
    statusEl.dataset.kind = kind || "";
  };

  function render() {
    root.querySelectorAll(".rate-card").forEach((card, col) => {
      const cid = String(ids[col]);
      const scores = state.scores[cid] || {};
      card.querySelectorAll("tr[data-attribute]").forEach((row) => {
        const value = scores[row.dataset.attribute];
        row.querySelectorAll(".score").forEach((button) => {
          button.classList.toggle("chosen", Number(button.dataset.score) === value);
        });
      });
      card.querySelector(".badge.best").hidden = !(state.best === ids[col] && !state.tie);
      card.querySelector(".badge.worst").hidden = !(state.worst === ids[col] && !state.tie);
      card.classList.toggle("is-best", state.best === ids[col] && !state.tie);
      card.classList.toggle("is-worst", state.worst === ids[col] && !state.tie);
    });
    root.querySelectorAll(".cursor").forEach((el) => el.classList.remove("cursor"));
    const card = root.querySelectorAll(".rate-card")[cursor.col];
    const row = card && card.querySelector(`tr[data-row="${cursor.row}"]`);
    if (row) {
      row.classList.add("cursor");
      row.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
    tieEl.checked = Boolean(state.tie);
    if (document.activeElement !== commentEl) commentEl.value = state.comment || "";
  }

  function change(mutate) {
    mutate();
    errorsEl.innerHTML = "";
    saveDraft();
    if (!sending) setStatus("Not submitted yet (kept in this browser)", "draft");
    render();
  }

  function setScore(col, attribute, value) {
    change(() => {
      const cid = String(ids[col]);
      state.scores[cid] = { ...(state.scores[cid] || {}), [attribute]: value };
    });
  }

  function pick(which, col) {
    change(() => {
      state.tie = false;
      state[which] = ids[col];
      const other = which === "best" ? "worst" : "best";
      if (state[other] === ids[col]) state[other] = null;
    });
  }

  function missing() {
    const problems = [];
    ids.forEach((cid, col) => {
      const scores = state.scores[String(cid)] || {};
      attributes.forEach((attribute, row) => {
        if (scores[attribute] === undefined) problems.push({ col, row, text: `Response ${col + 1}: ${attribute}` });
      });
    });
    if (!state.tie && (state.best == null || state.worst == null)) {
      problems.push({ col: 0, row: 5, text: "Pick the best and the worst response, or mark all equal" });
    }
    return problems;
  }

  function showErrors(list) {
    errorsEl.innerHTML = "";
    list.forEach((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      errorsEl.appendChild(li);
    });
  }

  async function submit(attempt = 0) {
    if (sending) return;
    const problems = missing();
    if (problems.length) {
      cursor = { col: problems[0].col, row: problems[0].row };
      showErrors(problems.slice(0, 6).map((p) => `Missing: ${p.text}`));
      render();
      return;
    }
    sending = true;
    clearTimeout(retryTimer);
    setStatus("Saving…", "saving");
    let response = null;
    try {
      response = await fetch(`/annotate/items/${cfg.assignment}/submit/`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify(state),
        credentials: "same-origin",
      });
    } catch (e) {
      response = null;
    }
    sending = false;
    if (response && response.ok) {
      const body = await response.json();
      localStorage.removeItem(draftKey);
      setStatus("Saved", "saved");
      window.location.assign(body.next);
      return;
    }
    if (response && (response.status === 400 || response.status === 409)) {
      const body = await response.json().catch(() => ({ errors: ["The server refused it."] }));
      setStatus("Not saved: see below (kept in this browser)", "error");
      showErrors(body.errors || []);
      return;
    }
    if (response && response.status === 403) {
      setStatus("Not saved: your session ended. Log in again in another tab; this page keeps your answers.", "error");
      retryLater(attempt, 15000);
      return;
    }
    // Network down, 5xx, 429: keep the draft and try again, a little later each time.
    retryLater(attempt, response && response.status === 429 ? 15000 : null);
  }

  function retryLater(attempt, fixedMs) {
    const wait = fixedMs || Math.min(30000, 1000 * 2 ** attempt);
    setStatus(`Not saved yet: retrying in ${Math.round(wait / 1000)} s (kept in this browser)`, "retrying");
    retryTimer = setTimeout(() => submit(attempt + 1), wait);
  }

  // Another response. From the pick row (where five digits leave the cursor) the cursor
  // goes to the first attribute that response still lacks, helpfulness for a fresh one, so
  // that the next digits score it; from an attribute row it keeps the row, to compare one
  // attribute across responses.
  function moveTo(col) {
    if (cursor.row === 5) {
      const scores = state.scores[String(ids[col])] || {};
      const open = attributes.findIndex((attribute) => scores[attribute] === undefined);
      if (open >= 0) cursor.row = open;
    }
    cursor.col = col;
    render();
  }

  function overlay(name, show) {
    const el = root.querySelector(`[data-overlay="${name}"]`);
    if (el) el.hidden = show === undefined ? !el.hidden : !show;
  }

  function closeOverlays() {
    root.querySelectorAll("[data-overlay]").forEach((el) => (el.hidden = true));
  }

  function flag() {
    const reason = window.prompt("Why flag this item?");
    if (reason === null) return;
    const form = root.querySelector("[data-flag-form]");
    form.querySelector("input[name=reason]").value = reason || "flagged";
    form.submit();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target === commentEl) {
      if (event.key === "Escape") commentEl.blur();
      return;
    }
    const key = event.key;
    const cards = ids.length;
    const handled = () => event.preventDefault();
    if (key === "Escape") return closeOverlays();
    if (key === "?") return handled(), overlay("help");
    if (!root.querySelector('[data-overlay="help"]').hidden) return;
    if (key === "ArrowRight" || key === "l") return handled(), moveTo((cursor.col + 1) % cards);
    if (key === "ArrowLeft" || key === "h") return handled(), moveTo((cursor.col - 1 + cards) % cards);
    if (key === "ArrowDown" || key === "j") return handled(), (cursor.row = Math.min(5, cursor.row + 1)), render();
    if (key === "ArrowUp" || key === "k") return handled(), (cursor.row = Math.max(0, cursor.row - 1)), render();
    if (/^[0-4]$/.test(key) && cursor.row < 5) {
      handled();
      setScore(cursor.col, attributes[cursor.row], Number(key));
      cursor.row = Math.min(5, cursor.row + 1);
      return render();
    }
    if (key === "b") return handled(), pick("best", cursor.col);
    if (key === "w") return handled(), pick("worst", cursor.col);
    if (key === "e") return handled(), change(() => { state.tie = !state.tie; });
    if (key === "c") return handled(), commentEl.focus();
    if (key === "Enter") return handled(), submit();
    if (key === "s") return handled(), root.querySelector("[data-skip-form]").submit();
    if (key === "f") return handled(), flag();
    if (key === "u") return handled(), window.location.assign(root.querySelector("[data-action=undo]").href);
    if (key === "z") return handled(), overlay("zoom");
  });

  root.addEventListener("click", (event) => {
    const button = event.target.closest("button, img[data-action], .overlay");
    if (!button) return;
    const card = event.target.closest(".rate-card");
    const col = card ? Number(card.dataset.col) : cursor.col;
    if (button.classList.contains("score")) {
      const row = button.closest("tr");
      cursor = { col, row: Number(row.dataset.row) };
      setScore(col, row.dataset.attribute, Number(button.dataset.score));
    } else if (button.classList.contains("pick")) {
      cursor = { col, row: 5 };
      pick(button.dataset.pick, col);
    } else if (button.dataset.action === "submit") {
      submit();
    } else if (button.dataset.action === "help") {
      overlay("help");
    } else if (button.dataset.action === "zoom") {
      // Several images (a conversation): the overlay shows the one clicked.
      const zoomed = root.querySelector("[data-zoomed]");
      if (zoomed && button.tagName === "IMG") zoomed.src = button.src;
      overlay("zoom", true);
    } else if (button.dataset.action === "flag") {
      event.preventDefault();
      flag();
    } else if (button.classList.contains("overlay")) {
      closeOverlays();
    }
  });

  tieEl.addEventListener("change", () => change(() => { state.tie = tieEl.checked; }));
  commentEl.addEventListener("input", () => change(() => { state.comment = commentEl.value; }));
  window.addEventListener("online", () => { if (retryTimer) { clearTimeout(retryTimer); submit(); } });

  if (restored) setStatus("Restored what you typed earlier (not submitted yet)", "draft");
  render();
})();
