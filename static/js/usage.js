// Usage page charts: fetched as JSON from /usage/charts.json and drawn with Chart.js.
// No inline script or style: the page only carries a data-url attribute (CSP allows 'self').
(function () {
  "use strict";

  const PALETTE = ["#0b5cad", "#1e6b35", "#8a5a00", "#b3261e", "#6a3d9a", "#00838f", "#5d4037", "#c2185b"];

  function dailyChart(canvas, daily) {
    const datasets = Object.entries(daily.teams).map(([team, values], i) => ({
      label: team,
      data: values,
      backgroundColor: PALETTE[i % PALETTE.length],
      stack: "gpu-hours",
    }));
    return new Chart(canvas, {
      type: "bar",
      data: { labels: daily.days, datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: "GPU-hours" } } },
      },
    });
  }

  function utilisationChart(canvas, utilisation) {
    return new Chart(canvas, {
      type: "line",
      data: {
        labels: utilisation.days,
        datasets: [{ label: "allocated / total (" + utilisation.devices + " GPUs)", data: utilisation.percent, borderColor: PALETTE[0], fill: false }],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, max: 100, title: { display: true, text: "%" } } },
      },
    });
  }

  async function draw() {
    const anchor = document.getElementById("usage-charts");
    if (!anchor || typeof Chart === "undefined") return;
    const response = await fetch(anchor.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const data = await response.json();
    const daily = document.getElementById("daily-gpu-hours");
    if (daily) daily.chart = dailyChart(daily, data.daily_gpu_hours);
    const utilisation = document.getElementById("gpu-utilisation");
    if (utilisation && data.utilisation) utilisation.chart = utilisationChart(utilisation, data.utilisation);
    document.body.dataset.chartsReady = "true";
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
