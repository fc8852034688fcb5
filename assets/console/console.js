// Easel console: the live parts. Every page works without this script; it adds the CSRF
// header to htmx requests, the live timeline of a task, the gallery's lightbox and the
// playground's model switch.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  function line(type, data, labels) {
    var li = document.createElement("li");
    if (data.seq) li.dataset.seq = data.seq;
    var kind = document.createElement("span");
    kind.className = "event " + type;
    kind.textContent = labels[type] || type;
    li.appendChild(kind);
    var at = new Date(data.at || Date.now()).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    li.appendChild(document.createTextNode(" " + at + " "));
    var detail = "";
    if (type === "progress") {
      detail = data.percent != null ? data.percent + "%" : (data.queuePosition != null ? "#" + data.queuePosition : "");
    } else if (type === "started") {
      detail = data.channel || "";
    } else if (type === "image") {
      detail = "#" + ((data.index || 0) + 1);
    } else if (data.failMsg) {
      detail = data.failMsg;
    }
    var span = document.createElement("span");
    span.textContent = detail;
    li.appendChild(span);
    return li;
  }

  function follow(timeline) {
    var url = timeline.dataset.events;
    if (!url || !window.EventSource) return;
    var labels = JSON.parse(timeline.dataset.labels || "{}");
    var source = new EventSource(url);
    var types = ["created", "started", "progress", "image", "succeeded", "failed", "cancelled"];
    types.forEach(function (type) {
      source.addEventListener(type, function (e) {
        var data = JSON.parse(e.data);
        // Queue positions are not stored: each replaces the last.
        var last = timeline.lastElementChild;
        if (type === "progress" && last && last.dataset.transient) timeline.removeChild(last);
        var li = line(type, data, labels);
        if (!data.seq) li.dataset.transient = "1";
        timeline.appendChild(li);
        if (type === "succeeded" || type === "failed" || type === "cancelled") {
          source.close();
          // The page as it now stands: its images, charge and ledger lines.
          window.setTimeout(function () { window.location.reload(); }, 300);
        }
      });
    });
  }

  function lightbox() {
    var dialog = document.getElementById("lightbox");
    if (!dialog || !dialog.showModal) return;
    var image = document.getElementById("lightbox-image");
    var task = document.getElementById("lightbox-task");
    document.querySelectorAll("a[data-lightbox]").forEach(function (a) {
      a.addEventListener("click", function (e) {
        e.preventDefault();
        image.src = a.dataset.lightbox;
        var thumb = a.querySelector("img");
        image.alt = thumb ? thumb.alt : "";
        task.href = a.dataset.task;
        dialog.showModal();
      });
    });
    dialog.addEventListener("click", function (e) { if (e.target === dialog) dialog.close(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var timeline = document.getElementById("timeline");
    if (timeline) follow(timeline);
    lightbox();
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
