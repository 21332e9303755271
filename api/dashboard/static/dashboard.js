// lora-advisor dashboard: draws the figures the server embedded and polls /v1 for live progress.
// No build step, no framework; every server string is inserted with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "lora-advisor-token";
const POLL_MS = 2000;

// 1. A `?token=` in the address moves to sessionStorage and out of the address bar and history.
(function keepToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  url.searchParams.delete("token");
  window.history.replaceState(null, "", url.pathname + url.search + url.hash);
})();

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

// 2. A page request cannot carry a header, so links between dashboard pages carry the token again.
function withToken(href) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return href;
  const url = new URL(href, document.baseURI);
  url.searchParams.set("token", token);
  return url.toString();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || !sessionStorage.getItem(TOKEN_KEY)) return;
  event.preventDefault();
  window.location.assign(withToken(link.href));
});

async function getJson(url) {
  const response = await fetch(new URL(url, document.baseURI), { headers: authHeaders() });
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

function drawFigures(figures) {
  for (const [id, figure] of Object.entries(figures || {})) {
    const div = document.getElementById(id);
    if (div) Plotly.newPlot(div, figure.data, figure.layout, { displaylogo: false, responsive: true });
  }
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

// 3. The studies list: one row per study, redrawn from each poll of /v1/studies.
function renderStudies(studies, total) {
  const body = document.querySelector("#studies tbody");
  body.replaceChildren();
  for (const study of studies) {
    const row = body.insertRow();
    row.dataset.studyId = study.id;
    const link = document.createElement("a");
    link.href = "studies/" + study.id;
    link.dataset.nav = "";
    link.textContent = study.id;
    cell(row, "").append(link);
    cell(row, study.state, "state state-" + study.state);
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = study.progress;
    const progress = cell(row, "", "progress");
    progress.append(bar, " " + Math.round(study.progress * 100) + "%");
    cell(row, study.model);
    cell(row, study.method);
    cell(row, study.rank);
    cell(row, study.error || study.message || "");
    cell(row, (study.created_at || "").replace("T", " ").slice(0, 19));
  }
  document.getElementById("no-studies").hidden = studies.length > 0;
  document.getElementById("studies").hidden = studies.length === 0;
  document.getElementById("study-count").textContent = total + " stored";
}

function pollStudies(url) {
  window.setInterval(async () => {
    try {
      const page = await getJson(url);
      renderStudies(page.items, page.total);
    } catch (error) {
      console.warn("poll failed:", error.message);
    }
  }, POLL_MS);
}

// 4. One study: live state and progress while it runs; the page reloads once it finishes.
function pollStudy(url, state) {
  const timer = window.setInterval(async () => {
    try {
      const study = await getJson(url);
      document.getElementById("study-progress").value = study.progress;
      document.getElementById("study-message").textContent = study.message || "";
      document.getElementById("study-state").textContent = study.state;
      if (study.state !== state) {
        window.clearInterval(timer);
        window.location.assign(withToken(window.location.href));
      }
    } catch (error) {
      console.warn("poll failed:", error.message);
    }
  }, POLL_MS);
}

function main() {
  const data = JSON.parse(document.getElementById("dashboard-data").textContent);
  drawFigures(data.figures);
  if (data.page === "list") {
    renderStudies(data.studies, data.studies.length);
    pollStudies(data.poll);
  } else if (data.page === "study" && data.poll) {
    pollStudy(data.poll, data.study.state);
  }
  document.body.dataset.ready = "true";
}

main();
