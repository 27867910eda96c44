// The job page's metric charts: one line chart per metric (x = step), drawn from the API and
// polled every 2 s while the job is queued, admitted, starting or running; the last poll
// after it ends draws the final values and stops.
(function () {
  "use strict";

  const POLL_MS = 2000;

  function draw(grid, charts, metrics) {
    const C = window.DockyardCharts;
    Object.keys(metrics).sort().forEach((name) => {
      const series = metrics[name];
      let entry = charts.get(name);
      if (!entry) {
        entry = C.figure(grid, name);
        entry.chart = C.lineChart(entry.canvas, [C.dataset(name, series, charts.size)]);
        charts.set(name, entry);
      } else {
        entry.chart.data.datasets[0].data = C.dataset(name, series, 0).data;
        entry.chart.update("none");
      }
      const last = series[series.length - 1];
      entry.last.textContent = last ? "last " + C.formatValue(last[1]) + " at step " + C.formatValue(last[0]) : "";
    });
  }

  async function poll(grid, empty, charts) {
    let state = grid.dataset.state;
    try {
      const response = await fetch(grid.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const data = await response.json();
        state = data.state;
        draw(grid, charts, data.metrics || {});
        if (empty) empty.hidden = charts.size > 0;
      }
    } catch (error) {
      // A missed poll is retried at the next tick.
    }
    grid.dataset.state = state;
    if (window.DockyardCharts.ACTIVE.includes(state)) {
      setTimeout(() => poll(grid, empty, charts), POLL_MS);
    } else {
      grid.dataset.done = "true";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const grid = document.getElementById("job-metrics");
    if (!grid || typeof Chart === "undefined" || !window.DockyardCharts) return;
    poll(grid, document.getElementById("job-metrics-empty"), new Map());
  });
})();
