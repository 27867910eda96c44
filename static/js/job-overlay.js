// Overlaid metric charts: one chart per metric, one line per job. The jobs' series come in a
// <script type="application/json" id="overlay-data"> block ({"active", "jobs": [{id, name,
// metrics}]}); when the grid has a data-url and jobs are still active, it is polled for more.
(function () {
  "use strict";

  const POLL_MS = 3000;

  function draw(grid, charts, jobs) {
    const C = window.DockyardCharts;
    const names = new Set();
    jobs.forEach((job) => Object.keys(job.metrics || {}).forEach((name) => names.add(name)));
    Array.from(names).sort().forEach((name) => {
      // Colours follow the job's place in the list, so a job keeps its colour on every chart.
      const datasets = jobs
        .map((job, index) => ({ job: job, set: C.dataset(job.name, (job.metrics || {})[name], index) }))
        .filter((entry) => (entry.job.metrics || {})[name])
        .map((entry) => entry.set);
      let entry = charts.get(name);
      if (!entry) {
        entry = C.figure(grid, name);
        entry.chart = C.lineChart(entry.canvas, datasets);
        charts.set(name, entry);
      } else {
        entry.chart.data.datasets = datasets;
        entry.chart.update("none");
      }
      entry.last.textContent = datasets.length + (datasets.length === 1 ? " job" : " jobs");
    });
    const empty = document.getElementById("overlay-empty");
    if (empty) empty.hidden = charts.size > 0;
  }

  async function poll(grid, charts) {
    let active = true;
    try {
      const response = await fetch(grid.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const data = await response.json();
        draw(grid, charts, data.jobs || []);
        active = data.active;
      }
    } catch (error) {
      // A missed poll is retried at the next tick.
    }
    if (active) setTimeout(() => poll(grid, charts), POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const grid = document.getElementById("overlay-charts");
    const source = document.getElementById("overlay-data");
    if (!grid || !source || typeof Chart === "undefined" || !window.DockyardCharts) return;
    const data = JSON.parse(source.textContent);
    const charts = new Map();
    draw(grid, charts, data.jobs || []);
    if (data.active && grid.dataset.url) setTimeout(() => poll(grid, charts), POLL_MS);
  });
})();
