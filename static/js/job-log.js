// The job page's log: read from the API as a stream (a running job's output arrives as it is
// written) and appended to the <pre>, which stays scrolled to the bottom unless the reader
// scrolled up. A finished job's log is fetched whole the same way.
(function () {
  "use strict";

  // How close to the bottom (in pixels) still counts as "at the bottom".
  const SLACK = 24;

  function atBottom(pre) {
    return pre.scrollHeight - pre.scrollTop - pre.clientHeight <= SLACK;
  }

  async function follow(pre, status) {
    let stick = true;
    pre.addEventListener("scroll", () => { stick = atBottom(pre); });
    const append = (text) => {
      if (!text) return;
      pre.append(document.createTextNode(text));
      if (stick) pre.scrollTop = pre.scrollHeight;
    };
    status.textContent = "Loading…";
    let response;
    try {
      // No Accept header: the API negotiates JSON renderers and would refuse text/plain (406).
      response = await fetch(pre.dataset.url, { credentials: "same-origin" });
    } catch (error) {
      status.textContent = "The log could not be loaded; reload the page to try again.";
      return;
    }
    if (!response.ok || !response.body) {
      status.textContent = "The log could not be loaded (HTTP " + response.status + ").";
      return;
    }
    const following = pre.dataset.url.includes("follow=1");
    status.textContent = following ? "Following the output as it is written…" : "";
    pre.dataset.streaming = "true";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        append(decoder.decode(value, { stream: true }));
      }
      append(decoder.decode());
    } catch (error) {
      status.textContent = "The log stream was interrupted; reload the page to see the rest.";
      pre.dataset.streaming = "false";
      return;
    }
    pre.dataset.streaming = "false";
    status.textContent = pre.textContent ? (following ? "The job has ended." : "") : "No output.";
  }

  document.addEventListener("DOMContentLoaded", () => {
    const pre = document.getElementById("job-log");
    const status = document.getElementById("job-log-status");
    if (pre && status && pre.dataset.url) follow(pre, status);
  });
})();
