// Console dashboard: draws the charts from /console/dashboard.json with Chart.js (served by the node).
"use strict";
(async function () {
  const root = document.getElementById("charts");
  const response = await fetch(root.dataset.source, { credentials: "same-origin" });
  if (!response.ok) return;
  const data = await response.json();
  const bar = (id, labels, values) => new Chart(document.getElementById(id), {
    type: "bar",
    data: { labels, datasets: [{ data: values, backgroundColor: "#0b3d5c" }] },
    options: { animation: false, plugins: { legend: { display: false } } },
  });
  bar("chart-retrieval", data.retrieval.buckets, data.retrieval.counts);
  bar("chart-ingest", Object.keys(data.ingest_per_day), Object.values(data.ingest_per_day));
  bar("chart-utilisation", ["held", "read"], [data.utilisation.held, data.utilisation.read]);
  bar("chart-sharing", Object.keys(data.sharing), Object.values(data.sharing));
  const lag = data.anchoring || {};
  document.getElementById("lag").textContent = Object.entries(lag).map(([k, v]) => `${k}: ${v}`).join(" · ") || "—";
  root.dataset.drawn = "true";
})();
