// Souk's one script: progressive enhancement only; every page works without it.
//
// The order page follows its order: while the status is PENDING it asks
// /orders/{id}/status (same origin, the session cookie) and shows the answer in place,
// in a live region, so the shopper sees CONFIRMED or CANCELLED without a reload.
"use strict";

(function () {
  const status = document.getElementById("order-status");
  if (!status || !status.dataset.poll) return;
  const reason = document.getElementById("order-reason");
  const url = status.dataset.poll;
  let delay = 500;

  async function poll() {
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.ok) {
        const order = await response.json();
        if (status.textContent !== order.status) status.textContent = order.status;
        if (reason && order.reason) reason.textContent = order.reason;
        if (order.status === "CANCELLED") {
          const cancel = document.getElementById("cancel-order");
          if (cancel) cancel.remove();
        }
        if (order.status !== "PENDING") return;
      }
    } catch (_) {
      // The network blinked: try again later.
    }
    delay = Math.min(delay * 1.5, 5000);
    setTimeout(poll, delay);
  }

  if (status.textContent.trim() === "PENDING") setTimeout(poll, delay);
})();

// A form sent once is not sent again by a second click while the first is on its way.
document.addEventListener("submit", function (event) {
  const button = event.target.querySelector("button[type=submit]");
  if (button) setTimeout(function () { button.disabled = true; }, 0);
});
