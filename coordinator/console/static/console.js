// fedcollab console: keeps a job page live by polling GET /api/jobs/{id} every 2 s.
// Only textContent and setAttribute are used: nothing from the API becomes markup.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var SVG_NS = "http://www.w3.org/2000/svg";

  function fmt(value, digits) {
    if (value === null || value === undefined) { return "-"; }
    if (typeof value === "number" && !Number.isInteger(value)) {
      return String(Number(value.toPrecision(digits || 4)));
    }
    return String(value);
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function row(attrs, cells) {
    var tr = el("tr", attrs);
    cells.forEach(function (c) { tr.appendChild(el("td", {}, fmt(c))); });
    return tr;
  }

  function setText(id, text) {
    var node = document.getElementById(id);
    if (node) { node.textContent = text; }
  }

  function replaceRows(table, rows) {
    var body = table.tBodies[0] || table.appendChild(el("tbody"));
    while (body.firstChild) { body.removeChild(body.firstChild); }
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function ensureTable(id, headers) {
    var table = document.getElementById(id);
    if (table) { return table; }
    table = el("table", { id: id });
    var tr = el("tr");
    headers.forEach(function (h) { tr.appendChild(el("th", {}, h)); });
    table.appendChild(el("thead")).appendChild(tr);
    table.appendChild(el("tbody"));
    document.getElementById("insights").appendChild(table);
    return table;
  }

  function update(job, metricKey) {
    var status = document.getElementById("job-status");
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    setText("job-round", job.round_text);
    setText("job-epsilon", fmt(job.epsilon));
    var final = document.getElementById("job-final");
    if (final && job.final_table) {
      var head = final.tHead.rows[0];
      while (head.firstChild) { head.removeChild(head.firstChild); }
      job.final_table.columns.forEach(function (c) { head.appendChild(el("th", {}, c)); });
      replaceRows(final, job.final_table.rows.map(function (r) { return row({}, r); }));
      final.hidden = false;
      var none = document.getElementById("job-final-none");
      if (none) { none.hidden = true; }
    }
    var failure = document.getElementById("job-failure");
    if (failure && job.error) {
      failure.textContent = job.error + (job.reason.length ? ": " + job.reason[0] : "");
      failure.hidden = false;
    }

    var chart = document.getElementById("metric-chart");
    if (chart && job.chart.points) {
      var line = chart.querySelector("polyline");
      if (!line) {
        line = document.createElementNS(SVG_NS, "polyline");
        line.setAttribute("class", "curve");
        line.setAttribute("fill", "none");
        line.setAttribute("stroke", "#1565c0");
        line.setAttribute("stroke-width", "2");
        chart.appendChild(line);
      }
      line.setAttribute("points", job.chart.points);
      setText("chart-ymin", fmt(job.chart.y_min));
      setText("chart-ymax", fmt(job.chart.y_max));
      setText("chart-xmax", fmt(job.chart.x_max));
    }

    var rounds = document.getElementById("rounds");
    if (rounds) {
      replaceRows(rounds, job.rounds.map(function (r) {
        return row({ "data-round": String(r.round) }, [r.round, r.partners, r[metricKey], r.epsilon]);
      }));
    }

    var list = document.getElementById("participants-list");
    if (list && job.participants.length) {
      while (list.firstChild) { list.removeChild(list.firstChild); }
      job.participants.forEach(function (p) {
        var text = p.partner + ": " + p.state + (p.detail ? " (" + p.detail + ")" : "");
        list.appendChild(el("li", { "data-partner": p.partner, "class": "state-" + p.state }, text));
      });
    }

    if (job.attributions) {
      var drivers = ensureTable("drivers", ["Feature", "Importance", "Direction"]);
      replaceRows(drivers, job.attributions.features.map(function (f) {
        return row({ "data-feature": String(f.feature) }, [f.feature, f.importance, f.direction]);
      }));
    }
    if (job.segments) {
      var segments = ensureTable("segments",
        ["Segment", "Label", "Size", "Share", "Purchase rate", "Lift", "Description"]);
      replaceRows(segments, job.segments.map(function (s) {
        return row({ "data-segment": String(s.segment) },
          [s.segment, s.label, s.size, s.share, s.purchase_rate, s.lift, s.description]);
      }));
    }
    var downloads = document.getElementById("downloads");
    if (downloads && job.downloads.length && !downloads.querySelector("a")) {
      job.downloads.forEach(function (name) {
        downloads.appendChild(el("a", { "class": "download", href: "/jobs/" + encodeURIComponent(job.id) + "/files/" + encodeURIComponent(name) }, name));
        downloads.appendChild(document.createTextNode(" "));
      });
    }
  }

  function poll(live) {
    var id = live.getAttribute("data-job-id");
    var metricKey = live.getAttribute("data-metric");
    fetch("/api/jobs/" + encodeURIComponent(id), { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        if (resp.status === 401) { window.location.assign("/login"); return null; }
        return resp.ok ? resp.json() : null;
      })
      .then(function (job) {
        if (job) {
          update(job, metricKey);
          if (job.status === "completed" || job.status === "failed") {
            live.setAttribute("data-final", "true");
            return;
          }
        }
        window.setTimeout(function () { poll(live); }, POLL_MS);
      })
      .catch(function () { window.setTimeout(function () { poll(live); }, POLL_MS); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("job-live");
    if (live) { poll(live); }
  });
}());
