// Line charts of job metrics (x = step), shared by the job, compare and experiment pages.
// Each chart sits in a <figure> made here; no inline script or style (the CSP allows 'self').
(function () {
  "use strict";

  const PALETTE = ["#0b5cad", "#b3261e", "#1e6b35", "#8a5a00", "#6a3d9a", "#00838f", "#5d4037", "#c2185b",
    "#3949ab", "#7cb342"];
  // Past this many lines a legend hides the chart; hovering still names each job.
  const LEGEND_MAX = 12;

  function points(series) {
    return (series || []).map(([step, value]) => ({ x: step, y: value }));
  }

  function dataset(label, series, index) {
    const colour = PALETTE[index % PALETTE.length];
    return { label: label, data: points(series), borderColor: colour, backgroundColor: colour, pointRadius: 2,
      borderWidth: 2, tension: 0 };
  }

  // A figure with a caption and a canvas for one metric, added to `grid` in name order.
  function figure(grid, name) {
    const box = document.createElement("figure");
    box.className = "chart-card";
    box.dataset.metric = name;
    const caption = document.createElement("figcaption");
    const title = document.createElement("span");
    title.className = "chart-title";
    title.textContent = name;
    const last = document.createElement("span");
    last.className = "chart-last muted";
    caption.append(title, " ", last);
    const holder = document.createElement("div");
    holder.className = "chart-box chart-box-small";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", name + " by step");
    holder.append(canvas);
    box.append(caption, holder);
    const after = Array.from(grid.children).find((child) => child.dataset.metric > name);
    grid.insertBefore(box, after || null);
    return { box: box, canvas: canvas, last: last };
  }

  function lineChart(canvas, datasets) {
    return new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: false,
        interaction: { mode: "nearest", intersect: false },
        plugins: { legend: { display: datasets.length > 1 && datasets.length <= LEGEND_MAX } },
        // Steps are usually whole numbers: no ticks at 1.2, 1.4, …
        scales: { x: { type: "linear", title: { display: true, text: "step" }, ticks: { precision: 0 } } },
      },
    });
  }

  function formatValue(value) {
    return typeof value === "number" ? Number(value.toPrecision(6)).toString() : String(value);
  }

  window.DockyardCharts = { dataset: dataset, figure: figure, lineChart: lineChart, formatValue: formatValue,
    ACTIVE: ["queued", "admitted", "starting", "running"] };
})();
