// fastconv face: the page. Plain JS, no build step; talks to /api/v1 with fetch.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "fastconv-api-key";
let threshold = null;
let keyWaiters = [];

// -- API key: asked for once (on the first 401), kept in localStorage -----------------------
function askForKey(message) {
  $("key-error").textContent = message || "";
  $("key-dialog").hidden = false;
  $("key-input").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}
$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(KEY, $("key-input").value);
  $("key-dialog").hidden = true;
  keyWaiters.splice(0).forEach((resolve) => resolve());
});

async function api(path, options = {}, retried = false) {
  const headers = Object.assign({}, options.headers || {});
  const key = localStorage.getItem(KEY);
  if (key) headers["x-api-key"] = key;
  const resp = await fetch("/api/v1" + path, Object.assign({}, options, { headers }));
  if (resp.status === 401 && !retried) {
    await askForKey(key ? "That key was refused; try again." : "");
    return api(path, options, true);
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : `HTTP ${resp.status}`;
    throw new Error(msg);
  }
  return body;
}

function imageForm(fields) {
  const form = new FormData();
  for (const [name, file] of Object.entries(fields)) form.append(name, file);
  form.append("detect", $("detect").checked ? "true" : "false");
  form.append("crops", "true");
  return form;
}

async function refreshHealth() {
  const h = await api("/health");
  $("model").textContent = h.model;
  $("engine").textContent = h.engine;
  $("threshold").textContent = h.threshold.toFixed(3);
  $("scorer").textContent = scoreLabel(h);
  $("scorer").dataset.kind = h.threshold_kind;
  $("gallery-size").textContent = h.gallery.faces;
  threshold = h.threshold;
  return h;
}

// -- tabs ---------------------------------------------------------------------------------
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
  document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== tab.dataset.panel; });
}));

// -- verify -------------------------------------------------------------------------------
// the bar: a cosine from -1 to 1 as it is; a log-likelihood ratio s through a logistic centred on the
// threshold t (s = t in the middle, s = t +- 10 near the ends): LLRs have no fixed range
const barFraction = (s, kind, t) => kind === "log-likelihood ratio" ? 1 / (1 + Math.exp(-(s - t) / 4))
  : (Math.max(-1, Math.min(1, s)) + 1) / 2;
const barPos = (s, kind, t) => `${(100 * barFraction(s, kind, t)).toFixed(2)}%`;
const scoreLabel = (r) => r.threshold_kind === "cosine" ? "cosine" : `${r.scorer} log-likelihood ratio`;

let verifySeq = 0;  // only the newest request's answer is shown (an older pair's may arrive later)

async function runVerify() {
  const f1 = $("file1").files[0], f2 = $("file2").files[0];
  $("verify-error").textContent = "";
  const seq = ++verifySeq;
  if (!f1 || !f2) return;
  $("decision").textContent = "…";
  $("decision").dataset.verified = "";
  try {
    const r = await api("/verify", { method: "POST", body: imageForm({ img1: f1, img2: f2 }) });
    if (seq !== verifySeq) return;
    $("crop1").src = r.faces[0].crop;
    $("crop2").src = r.faces[1].crop;
    $("score-kind").textContent = r.threshold_kind === "cosine" ? "cosine similarity" : scoreLabel(r);
    $("similarity").textContent = r.similarity.toFixed(4);
    $("similarity").dataset.value = String(r.similarity);
    $("verify-threshold").textContent = r.threshold.toFixed(4);
    $("decision").textContent = r.verified ? "same person" : "different people";
    $("decision").dataset.verified = String(r.verified);
    $("bar-fill").style.width = barPos(r.similarity, r.threshold_kind, r.threshold);
    $("bar-fill").className = "bar-fill " + (r.verified ? "same" : "different");
    $("bar-threshold").style.left = barPos(r.threshold, r.threshold_kind, r.threshold);
    $("verify-result").hidden = false;
  } catch (err) {
    if (seq !== verifySeq) return;
    $("verify-result").hidden = true;
    $("decision").textContent = "";
    $("verify-error").textContent = err.message;
  }
}

for (const n of ["1", "2"]) {
  const drop = $("drop" + n), input = $("file" + n);
  input.addEventListener("change", () => { $("crop" + n).removeAttribute("src"); runVerify(); });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer.files.length) {
      input.files = ev.dataTransfer.files;
      input.dispatchEvent(new Event("change"));
    }
  });
}

// -- gallery ------------------------------------------------------------------------------
async function refreshSubjects() {
  const r = await api("/subjects");
  const ul = $("subjects");
  ul.replaceChildren(...r.subjects.map((s) => {
    const li = document.createElement("li");
    li.textContent = `${s.name} (${s.n_faces} face${s.n_faces === 1 ? "" : "s"})`;
    li.dataset.name = s.name;
    return li;
  }));
  $("gallery-size").textContent = r.n_faces;
}

$("enrol-btn").addEventListener("click", async () => {
  const name = $("subject-name").value.trim();
  const files = Array.from($("enrol-files").files);
  $("enrol-error").textContent = "";
  $("enrol-status").textContent = "";
  if (!name || !files.length) {
    $("enrol-error").textContent = "give a name and at least one photo";
    return;
  }
  try {
    const names = (await api("/subjects")).subjects.map((s) => s.name);
    if (!names.includes(name)) {
      await api("/subjects", { method: "POST", headers: { "content-type": "application/json" },
                               body: JSON.stringify({ name }) });
    }
    let done = 0;
    for (const file of files) {
      try {
        await api(`/subjects/${encodeURIComponent(name)}/faces`, { method: "POST", body: imageForm({ img: file }) });
        done += 1;
      } catch (err) {
        $("enrol-error").textContent += `${file.name}: ${err.message} `;
      }
    }
    $("enrol-status").textContent = `enrolled ${done} of ${files.length} photo(s) for ${name}`;
    $("enrol-status").dataset.done = String(done);
    $("enrol-files").value = "";
  } catch (err) {
    $("enrol-error").textContent = err.message;
  }
  await refreshSubjects().catch(() => {});
});

$("identify-file").addEventListener("change", async () => {
  const file = $("identify-file").files[0];
  const tbody = $("identify-results").querySelector("tbody");
  $("identify-error").textContent = "";
  $("identify-decision").textContent = "";
  $("identify-decision").dataset.subject = "";
  tbody.replaceChildren();
  if (!file) return;
  try {
    const form = imageForm({ img: file });
    form.append("top_k", "5");
    const r = await api("/identify", { method: "POST", body: form });
    $("identify-crop").src = r.face.crop;
    $("identify-score-kind").textContent = r.threshold_kind === "cosine" ? "similarity" : "log-likelihood ratio";
    r.results.forEach((m, i) => {
      const tr = document.createElement("tr");
      tr.className = m.accepted ? "accepted" : "";
      for (const text of [String(i + 1), m.subject, m.similarity.toFixed(4), m.accepted ? "match" : ""]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    });
    $("identify-decision").textContent = r.accepted ? `identified: ${r.subject}`
      : (r.results.length ? "no match above the threshold" : "the gallery is empty");
    $("identify-decision").dataset.subject = r.subject || "";
  } catch (err) {
    $("identify-error").textContent = err.message;
  }
});

// -- start ----------------------------------------------------------------------------------
refreshHealth().then((h) => { $("detect").checked = h.detect; return refreshSubjects(); })
  .then(() => { document.body.dataset.ready = "true"; })
  .catch((err) => { $("verify-error").textContent = err.message; });
