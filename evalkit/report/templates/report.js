// evalkit report: sortable tables and the per-example view. Data is only ever written into the
// page with textContent (never innerHTML), so outputs and golden strings stay text.
"use strict";
(function () {
  var PAGE = 50;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "\u2014";
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1000) return Math.round(v).toLocaleString("en-US");
    if (a >= 0.001) return String(Number(v.toPrecision(3)));
    return v.toExponential(2);
  }

  // -- sortable tables ------------------------------------------------------------------------
  function cellKey(cell, numeric) {
    var raw = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    var n = parseFloat(raw);
    return isNaN(n) ? null : n;
  }

  function makeSortable(table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var numeric = th.getAttribute("data-type") === "num";
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var a = cellKey(r1.cells[col], numeric), b = cellKey(r2.cells[col], numeric);
          if (a === null && b === null) return 0;
          if (a === null) return 1; // blanks last either way
          if (b === null) return -1;
          var c = a < b ? -1 : a > b ? 1 : 0;
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  // -- word-level diff ------------------------------------------------------------------------
  // Words keep their trailing whitespace (so a deleted phrase reads as one piece) but compare
  // without it; leading whitespace is a token of its own.
  function words(text) { return text.match(/^\s+|\S+\s*/g) || []; }
  function same(x, y) { return x === y || x.trim() === y.trim(); }

  // Longest common subsequence over words, after trimming the common prefix and suffix.
  // Returns [baselineParts, candidateParts], each a list of [kind, text] with kind "", "del", "ins".
  function wordDiff(before, after) {
    var a = words(before), b = words(after);
    var start = 0;
    while (start < a.length && start < b.length && same(a[start], b[start])) start++;
    var endA = a.length, endB = b.length;
    while (endA > start && endB > start && same(a[endA - 1], b[endB - 1])) { endA--; endB--; }
    var midA = a.slice(start, endA), midB = b.slice(start, endB);
    var left = [], right = [];
    function push(list, kind, text) {
      var last = list[list.length - 1];
      if (last && last[0] === kind) last[1] += text; else list.push([kind, text]);
    }
    a.slice(0, start).forEach(function (w, k) { push(left, "", w); push(right, "", b[k]); });
    var n = midA.length, m = midB.length;
    if (n * m > 250000) { // too long to align word by word: show the middles as replaced
      midA.forEach(function (w) { push(left, "del", w); });
      midB.forEach(function (w) { push(right, "ins", w); });
    } else {
      var dp = [];
      for (var i = 0; i <= n; i++) { dp.push(new Int32Array(m + 1)); }
      for (i = n - 1; i >= 0; i--) {
        for (var j = m - 1; j >= 0; j--) {
          dp[i][j] = same(midA[i], midB[j]) ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
        }
      }
      i = 0; j = 0;
      while (i < n || j < m) {
        if (i < n && j < m && same(midA[i], midB[j])) {
          push(left, "", midA[i]); push(right, "", midB[j]); i++; j++;
        } else if (j < m && (i === n || dp[i][j + 1] >= dp[i + 1][j])) {
          push(right, "ins", midB[j]); j++;
        } else {
          push(left, "del", midA[i]); i++;
        }
      }
    }
    a.slice(endA).forEach(function (w) { push(left, "", w); });
    b.slice(endB).forEach(function (w) { push(right, "", w); });
    return [left, right];
  }

  function renderParts(cell, parts) {
    parts.forEach(function (p) {
      cell.appendChild(p[0] ? el(p[0], null, p[1]) : document.createTextNode(p[1]));
    });
  }

  // -- the per-example view -------------------------------------------------------------------
  function ExampleView(root) {
    this.root = root;
    this.data = JSON.parse(root.querySelector("script.examples-data").textContent);
    this.q = function (cls) { return root.querySelector("." + cls); };
    this.page = 0;
    this.reverse = false;
    this.setup();
    this.update();
  }

  ExampleView.prototype.setup = function () {
    var d = this.data, self = this;
    var cand = this.q("ex-cand"), base = this.q("ex-base"), metric = this.q("ex-metric");
    d.candidates.forEach(function (name, i) {
      cand.appendChild(new Option(name, i));
      base.appendChild(new Option(name, i));
    });
    base.appendChild(new Option("(none)", -1));
    var baseline = d.baseline === null ? -1 : d.baseline;
    var firstOther = d.candidates.findIndex(function (_, i) { return i !== baseline; });
    cand.value = String(firstOther < 0 ? 0 : firstOther);
    base.value = String(baseline);
    metric.appendChild(new Option("any quality metric", -1));
    d.metrics.forEach(function (m, i) {
      metric.appendChild(new Option(m.name + (m.hib ? " \u2191" : " \u2193"), i));
    });
    var firstQuality = d.metrics.findIndex(function (m) { return !m.resource; });
    metric.value = String(firstQuality < 0 ? -1 : firstQuality);
    var rerun = function () { self.page = 0; self.update(); };
    [cand, base, metric, this.q("ex-regr"), this.q("ex-err")].forEach(function (c) {
      c.addEventListener("change", rerun);
    });
    this.q("ex-sort").addEventListener("change", function () { self.reverse = false; rerun(); });
    var timer = null;
    this.q("ex-search").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(rerun, 120);
    });
    this.q("ex-dir").addEventListener("click", function () { self.reverse = !self.reverse; rerun(); });
    this.q("ex-h-id").addEventListener("click", function () {
      self.q("ex-sort").value = "id"; self.reverse = !self.reverse; rerun();
    });
    this.q("ex-prev").addEventListener("click", function () { if (self.page > 0) { self.page--; self.render(); } });
    this.q("ex-next").addEventListener("click", function () {
      if ((self.page + 1) * PAGE < self.rows.length) { self.page++; self.render(); }
    });
  };

  ExampleView.prototype.output = function (run, i) {
    if (run < 0) return null;
    var k = this.data.runs[run].out[i];
    return k < 0 ? null : this.data.strings[k];
  };

  // Signed change on one metric, positive = better (null when either side has no score).
  ExampleView.prototype.gain = function (c, b, m, i) {
    if (b < 0) return null;
    var x = this.data.runs[c].scores[m][i], y = this.data.runs[b].scores[m][i];
    if (x === null || y === null) return null;
    return this.data.metrics[m].hib ? x - y : y - x;
  };

  ExampleView.prototype.metricsFor = function (m) {
    if (m >= 0) return [m];
    var out = [];
    this.data.metrics.forEach(function (info, k) { if (!info.resource) out.push(k); });
    return out;
  };

  ExampleView.prototype.update = function () {
    var d = this.data, self = this;
    var c = +this.q("ex-cand").value, b = +this.q("ex-base").value, m = +this.q("ex-metric").value;
    var metrics = this.metricsFor(m);
    var needle = this.q("ex-search").value.trim().toLowerCase();
    var regr = this.q("ex-regr").checked, errs = this.q("ex-err").checked;
    var n = d.ids.length, rows = [];
    var started = performance.now();
    for (var i = 0; i < n; i++) {
      var worst = null;
      for (var k = 0; k < metrics.length; k++) {
        var g = this.gain(c, b, metrics[k], i);
        if (g !== null && (worst === null || g < worst)) worst = g;
      }
      if (regr && !(worst !== null && worst < -1e-9)) continue;
      if (errs && !(d.runs[c].errors[i] || (b >= 0 && d.runs[b].errors[i]))) continue;
      if (needle) {
        var hay = [d.ids[i], d.inputs[i], d.refs[i], this.output(c, i) || "", this.output(b, i) || ""].join("\n").toLowerCase();
        if (hay.indexOf(needle) < 0) continue;
      }
      rows.push({ i: i, worst: worst });
    }
    var sort = this.q("ex-sort").value;
    var mk = metrics[0];
    var key = {
      delta: function (r) { return r.worst; },
      score: function (r) {
        var v = d.runs[c].scores[mk] ? d.runs[c].scores[mk][r.i] : null;
        return v === null ? null : (d.metrics[mk].hib ? v : -v);
      },
      id: function (r) { return d.ids[r.i]; },
      original: function (r) { return r.i; }
    }[sort];
    rows.sort(function (r1, r2) {
      var a = key(r1), z = key(r2);
      if (a === null && z === null) return r1.i - r2.i;
      if (a === null) return 1;
      if (z === null) return -1;
      var o = a < z ? -1 : a > z ? 1 : r1.i - r2.i;
      return self.reverse ? -o : o;
    });
    this.rows = rows;
    this.filterMs = performance.now() - started;
    this.render();
  };

  ExampleView.prototype.render = function () {
    var d = this.data, self = this;
    var c = +this.q("ex-cand").value, b = +this.q("ex-base").value, m = +this.q("ex-metric").value;
    var metrics = this.metricsFor(m);
    var body = this.root.querySelector("table.ex-table tbody");
    var from = this.page * PAGE, to = Math.min(this.rows.length, from + PAGE);
    var frag = document.createDocumentFragment();
    for (var r = from; r < to; r++) frag.appendChild(this.row(this.rows[r], c, b, metrics));
    body.textContent = "";
    body.appendChild(frag);
    this.q("ex-count").textContent = this.rows.length
      ? (from + 1) + "\u2013" + to + " of " + this.rows.length.toLocaleString("en-US") + " examples"
      : "no example matches";
    this.q("ex-prev").disabled = this.page === 0;
    this.q("ex-next").disabled = to >= this.rows.length;
    this.root.setAttribute("data-rows", String(this.rows.length));
  };

  ExampleView.prototype.row = function (item, c, b, metrics) {
    var d = this.data, i = item.i;
    var tr = el("tr");
    tr.setAttribute("data-id", d.ids[i]);
    if (item.worst !== null && item.worst < -1e-9) tr.className = "regressed";
    else if (item.worst !== null && item.worst > 1e-9) tr.className = "improved";
    tr.appendChild(el("td", "id", d.ids[i]));
    tr.appendChild(el("td", "input", d.inputs[i]));
    tr.appendChild(el("td", "ref", d.refs[i]));
    var baseCell = el("td", "base-out"), candCell = el("td", "cand-out");
    var before = this.output(b, i), after = this.output(c, i);
    if (before !== null && after !== null) {
      var parts = wordDiff(before, after);
      renderParts(baseCell, parts[0]);
      renderParts(candCell, parts[1]);
    } else {
      if (before !== null) baseCell.textContent = before;
      if (after !== null) candCell.textContent = after;
    }
    [[baseCell, b], [candCell, c]].forEach(function (pair) {
      var err = pair[1] >= 0 ? d.runs[pair[1]].errors[i] : null;
      if (err) pair[0].appendChild(el("div", "err", "error: " + err));
    });
    tr.appendChild(baseCell);
    tr.appendChild(candCell);
    tr.appendChild(this.scores(c, b, i));
    tr.appendChild(this.notes(c, b, i));
    return tr;
  };

  ExampleView.prototype.scores = function (c, b, i) {
    var d = this.data, self = this, td = el("td", "scores"), table = el("table", "mini");
    d.metrics.forEach(function (info, m) {
      var x = d.runs[c].scores[m][i], y = b >= 0 ? d.runs[b].scores[m][i] : null;
      if (x === null && y === null) return;
      var tr = el("tr"), g = self.gain(c, b, m, i);
      tr.appendChild(el("td", null, info.name));
      tr.appendChild(el("td", g === null ? "" : g < -1e-9 ? "worse" : g > 1e-9 ? "better" : "", fmt(x)));
      tr.appendChild(el("td", "muted", b >= 0 ? fmt(y) : ""));
      table.appendChild(tr);
    });
    td.appendChild(table);
    return td;
  };

  ExampleView.prototype.notes = function (c, b, i) {
    var d = this.data, td = el("td", "notes");
    [[c, ""], [b, "baseline "]].forEach(function (pair) {
      if (pair[0] < 0) return;
      (d.runs[pair[0]].notes[i] || []).forEach(function (note) {
        var div = el("div", "note " + note[1]);
        var label = note[0] + (note[1] === "detail" ? "" : " " + note[1]);
        div.appendChild(el("b", null, pair[1] + label + ": "));
        div.appendChild(document.createTextNode(note[2]));
        td.appendChild(div);
      });
    });
    return td;
  };

  // The flips table: both outputs are rendered as text by the template; mark their word diff.
  function diffFlips() {
    Array.prototype.forEach.call(document.querySelectorAll("table.flips tbody tr"), function (tr) {
      var before = tr.querySelector(".flip-before"), after = tr.querySelector(".flip-after");
      var parts = wordDiff(before.textContent, after.textContent);
      before.textContent = ""; after.textContent = "";
      renderParts(before, parts[0]);
      renderParts(after, parts[1]);
    });
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), makeSortable);
    diffFlips();
    var views = [];
    Array.prototype.forEach.call(document.querySelectorAll(".examples"), function (root) {
      // One suite at a time, after the first paint, so the page shows before the data parses.
      setTimeout(function () {
        var started = performance.now();
        var view = new ExampleView(root);
        view.initMs = performance.now() - started;
        views.push(view);
        root.setAttribute("data-ready", "1");
      }, 0);
    });
    window.evalkitReport = { views: views, wordDiff: wordDiff };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
