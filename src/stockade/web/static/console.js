// Stockade console: a little progressive enhancement; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Ask before destructive actions (revoke).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  }
  // The curation form: the justification only matters for not_affected.
  const status = document.getElementById("status");
  const just = document.querySelector("form.curate .justification");
  if (status && just) {
    const sync = () => { just.hidden = status.value !== "not_affected"; };
    status.addEventListener("change", sync);
    sync();
  }
  // "Open project": go straight to the project typed into the filter box.
  const open = document.getElementById("open-project");
  if (open) {
    open.addEventListener("click", (ev) => {
      ev.preventDefault();
      const q = open.closest("form").querySelector("input[name=q]").value.trim();
      if (q) {
        window.location.href = "/ui/indexes/" + encodeURIComponent(open.dataset.index) +
          "/projects/" + encodeURIComponent(q.toLowerCase());
      }
    });
  }
});
