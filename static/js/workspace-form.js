// New-workspace form: sizes that do not fit now are disabled, unless the person chooses to
// wait for capacity, in which case any size may be picked and the workspace is queued.
document.addEventListener("DOMContentLoaded", () => {
  const wait = document.getElementById("id_wait");
  if (!wait) return;
  const full = document.querySelectorAll(".profile-full input[type=radio]");
  const sync = () => full.forEach((input) => { input.disabled = !wait.checked; });
  wait.addEventListener("change", sync);
  sync();
});
