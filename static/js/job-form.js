// New-job form: only the code fields that match the chosen source are shown (without
// JavaScript every field shows, and the server ignores the ones that do not apply).
document.addEventListener("DOMContentLoaded", () => {
  const radios = document.querySelectorAll("input[name=code_from]");
  const parts = document.querySelectorAll(".code-part[data-code-from]");
  if (!radios.length) return;
  const sync = () => {
    const chosen = document.querySelector("input[name=code_from]:checked");
    const value = chosen ? chosen.value : "none";
    parts.forEach((part) => { part.hidden = part.dataset.codeFrom !== value; });
  };
  radios.forEach((radio) => radio.addEventListener("change", sync));
  sync();
});
