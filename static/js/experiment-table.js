// Sortable experiment table: a click on a column heading sorts the rows by that column
// (numbers as numbers, empty cells last), a second click reverses. The choice is kept on the
// section around the table, so it survives htmx replacing the table while jobs run.
(function () {
  "use strict";

  function cellValue(row, index) {
    const cell = row.cells[index];
    return cell ? (cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim()) : "";
  }

  function compare(a, b, numeric) {
    if (a === b) return 0;
    if (a === "") return 1;
    if (b === "") return -1;
    return numeric ? Number(a) - Number(b) : a.localeCompare(b, undefined, { numeric: true });
  }

  function apply(section) {
    const key = section.dataset.sortKey;
    const table = section.querySelector("table.sortable");
    if (!key || !table || !table.tBodies.length) return;
    const headers = Array.from(table.tHead.rows[0].cells);
    const index = headers.findIndex((th) => {
      const button = th.querySelector("button[data-sort-key]");
      return button && button.dataset.sortKey === key;
    });
    if (index < 0) return;
    const direction = section.dataset.sortDir === "descending" ? -1 : 1;
    const body = table.tBodies[0];
    const rows = Array.from(body.rows).filter((row) => row.cells.length === headers.length);
    const numeric = rows.every((row) => {
      const value = cellValue(row, index);
      return value === "" || Number.isFinite(Number(value));
    });
    rows.sort((a, b) => {
      const x = cellValue(a, index);
      const y = cellValue(b, index);
      if (x === "" || y === "") return compare(x, y, numeric); // empty stays last either way
      return direction * compare(x, y, numeric);
    });
    rows.forEach((row) => body.append(row));
    headers.forEach((th, i) => {
      if (i === index) th.setAttribute("aria-sort", direction === 1 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const section = document.getElementById("experiment-results");
    if (!section) return;
    section.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-sort-key]");
      if (!button) return;
      const same = section.dataset.sortKey === button.dataset.sortKey;
      section.dataset.sortDir = same && section.dataset.sortDir === "ascending" ? "descending" : "ascending";
      section.dataset.sortKey = button.dataset.sortKey;
      apply(section);
    });
    // htmx swaps in a fresh table (a direct child of the section) while jobs run: sort it again.
    new MutationObserver(() => apply(section)).observe(section, { childList: true });
  });
})();
