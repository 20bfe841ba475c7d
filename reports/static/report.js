/* evalharness report: sorting, lazy sample data, search and filters, run comparison.
 *
 * Data arrive as <script> files calling EH.receive(key, payload): Chromium blocks fetch() of
 * file:// URLs, script tags are not. Text from models, judges and datasets is only ever put
 * into the page with textContent / text nodes, never parsed as HTML.
 */
(function () {
  "use strict";

  const EH = (window.EH = window.EH || {});
  const received = new Map();
  const waiting = new Map();

  EH.receive = function (key, payload) {
    received.set(key, payload);
    const list = waiting.get(key) || [];
    waiting.delete(key);
    list.forEach((w) => w.resolve(payload));
  };

  /** Load a data chunk once; later calls share the same result. */
  EH.load = function (key, src) {
    if (received.has(key)) return Promise.resolve(received.get(key));
    return new Promise((resolve, reject) => {
      if (waiting.has(key)) {
        waiting.get(key).push({ resolve, reject });
        return;
      }
      waiting.set(key, [{ resolve, reject }]);
      const script = document.createElement("script");
      script.src = src;
      script.async = true;
      const fail = (why) => {
        const list = waiting.get(key) || [];
        waiting.delete(key);
        list.forEach((w) => w.reject(new Error(why)));
      };
      script.onerror = () => fail("could not load " + src);
      script.onload = () => {
        if (waiting.has(key)) fail(src + " did not provide " + key);
      };
      document.head.appendChild(script);
    });
  };

  /** Build an element; string children become text nodes (never HTML). */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = String(value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  EH.h = h;

  function fmt(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    const size = Math.abs(value);
    if (size >= 1000) return Math.round(value).toLocaleString("en-US");
    if (size >= 10) return value.toFixed(2);
    return value.toFixed(3);
  }
  function signed(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    if (value === 0) return fmt(0);
    return (value > 0 ? "+" : "−") + fmt(Math.abs(value));
  }
  function fmtP(p) {
    if (p === null || p === undefined || !Number.isFinite(p)) return "–";
    return p < 0.001 ? p.toExponential(1) : p.toFixed(3);
  }

  function readConfig() {
    const node = document.getElementById("eh-config");
    return node ? JSON.parse(node.textContent) : {};
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  // -- sortable tables (leaderboard) -----------------------------------------------------
  function initSortable(table) {
    const body = table.tBodies[0];
    const headers = Array.from(table.querySelectorAll("th[data-col]"));
    const sortBy = (th) => {
      const col = Number(th.dataset.col);
      const numeric = th.dataset.type === "num";
      const current = th.getAttribute("aria-sort");
      let dir = numeric ? "descending" : "ascending";
      if (current === "descending") dir = "ascending";
      else if (current === "ascending") dir = "descending";
      headers.forEach((other) => other.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", dir);
      const sign = dir === "ascending" ? 1 : -1;
      const keyed = Array.from(body.rows).map((row, i) => {
        const cell = row.cells[col];
        const raw = cell ? cell.dataset.v : undefined;
        const missing = raw === undefined || raw === "";
        return { row, i, missing, v: missing ? null : numeric ? Number(raw) : raw.toLowerCase() };
      });
      keyed.sort((a, b) => {
        if (a.missing !== b.missing) return a.missing ? 1 : -1; // missing values always last
        if (a.missing) return a.i - b.i;
        if (a.v < b.v) return -sign;
        if (a.v > b.v) return sign;
        return a.i - b.i;
      });
      keyed.forEach((k) => body.appendChild(k.row));
    };
    headers.forEach((th) => {
      th.tabIndex = 0;
      th.addEventListener("click", () => sortBy(th));
      th.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(th);
        }
      });
    });
  }

  // -- sample browser -------------------------------------------------------------------
  /** Words must all occur; a "quoted phrase" must occur as written (spaces collapsed). */
  function searchTerms(query) {
    const terms = [];
    const pattern = /"([^"]*)"?|(\S+)/g;
    let match;
    while ((match = pattern.exec(query)) !== null) {
      const term = (match[1] !== undefined ? match[1] : match[2]).replace(/\s+/g, " ").trim();
      if (term) terms.push(term);
    }
    return terms;
  }

  const ROWS_PER_VIEW = 50;

  function initSamples(cfg) {
    const $ = (id) => document.getElementById(id);
    const status = $("sample-status");
    const rowsBody = $("sample-rows");
    const search = $("sample-search");
    const verdictSelect = $("verdict-filter");
    const scoreMin = $("score-min");
    const scoreMax = $("score-max");
    const tagBox = $("tag-filters");
    const state = { index: null, texts: null, loadingTexts: false, matches: [], view: 0 };
    const open = new Set();
    const tagSelects = [];

    const runSelect = $("run-select");
    if (runSelect) {
      runSelect.addEventListener("change", () => {
        window.location.href = runSelect.value;
      });
    }

    const pageKey = (n) => "page:" + cfg.key + ":" + n;
    const pageSrc = (n) => cfg.base + "p" + String(n).padStart(5, "0") + ".js";

    function buildFilters(index) {
      index.tag_keys.forEach((key, k) => {
        const values = index.tag_values[k];
        if (values.length < 2 || values.length > 300) return;
        const select = h("select", { "data-tag": key }, h("option", { value: "" }, "any"));
        values
          .map((v, i) => [v, i])
          .sort((a, b) => a[0].localeCompare(b[0]))
          .forEach(([v, i]) => select.appendChild(h("option", { value: String(i) }, v || "(empty)")));
        select.addEventListener("change", () => apply(true));
        tagSelects.push({ k, select });
        tagBox.appendChild(h("label", null, key, select));
      });
      if (index.verdicts.length > 1) {
        index.verdicts
          .map((v, i) => [v, i])
          .sort((a, b) => a[0].localeCompare(b[0]))
          .forEach(([v, i]) => verdictSelect.appendChild(h("option", { value: String(i) }, v)));
        $("verdict-filter-label").hidden = false;
      }
    }

    function wantsText(query) {
      if (query && !state.texts && !state.loadingTexts) {
        state.loadingTexts = true;
        EH.load("search:" + cfg.key, cfg.base + "search.js").then(
          (texts) => {
            state.texts = texts;
            apply(false);
          },
          (err) => {
            status.textContent = String(err.message || err);
          }
        );
      }
    }

    function apply(resetView) {
      const index = state.index;
      if (!index) return;
      const query = search.value.trim().toLowerCase();
      const terms = searchTerms(query);
      wantsText(query);
      const tags = tagSelects
        .filter((t) => t.select.value !== "")
        .map((t) => [t.k, Number(t.select.value)]);
      const verdict = verdictSelect.value === "" ? null : Number(verdictSelect.value);
      const lo = scoreMin.value === "" ? null : Number(scoreMin.value);
      const hi = scoreMax.value === "" ? null : Number(scoreMax.value);
      const matches = [];
      index.rows.forEach((row, i) => {
        for (const [k, value] of tags) if (row[2][k] !== value) return;
        if (verdict !== null && !row[3].includes(verdict)) return;
        if ((lo !== null || hi !== null) && (row[1] === null || !Number.isFinite(row[1]))) return;
        if (lo !== null && row[1] < lo) return;
        if (hi !== null && row[1] > hi) return;
        if (terms.length) {
          const text = state.texts
            ? state.texts[i]
            : (row[0] + " " + row[4] + " " + row[5]).toLowerCase();
          for (const term of terms) if (!text.includes(term)) return;
        }
        matches.push(i);
      });
      state.matches = matches;
      if (resetView) state.view = 0;
      render();
    }

    function render() {
      const index = state.index;
      const total = state.matches.length;
      const pages = Math.max(1, Math.ceil(total / ROWS_PER_VIEW));
      state.view = Math.min(state.view, pages - 1);
      const start = state.view * ROWS_PER_VIEW;
      const shown = state.matches.slice(start, start + ROWS_PER_VIEW);
      rowsBody.replaceChildren();
      shown.forEach((i) => {
        const tr = sampleRow(index, i);
        rowsBody.appendChild(tr);
        if (open.has(i)) showDetail(i, tr);
      });
      if (!total) {
        rowsBody.appendChild(
          h("tr", null, h("td", { colspan: 6, class: "muted" }, "No sample matches these filters."))
        );
      }
      const searching = search.value.trim() && !state.texts ? " (searching snippets; full text loading…)" : "";
      status.textContent =
        total === index.n
          ? index.n + " samples" + searching
          : total + " of " + index.n + " samples match" + searching;
      $("page-info").textContent = total
        ? start + 1 + "–" + Math.min(total, start + ROWS_PER_VIEW) + " of " + total
        : "";
      $("prev-page").disabled = state.view === 0;
      $("next-page").disabled = state.view >= pages - 1;
    }

    function sampleRow(index, i) {
      const row = index.rows[i];
      const chips = index.tag_keys
        .map((key, k) => (row[2][k] >= 0 ? index.tag_values[k][row[2][k]] : null))
        .filter((v) => v !== null && v !== "")
        .map((v) => h("span", { class: "chip" }, v));
      const verdicts = row[3].map((v) => h("span", { class: "chip" }, index.verdicts[v]));
      const tr = h(
        "tr",
        { class: "sample-row", "data-sample": row[0], tabindex: 0, "aria-expanded": open.has(i) ? "true" : "false" },
        h("td", { class: "num muted" }, String(i + 1)),
        h("td", null, h("code", null, row[0])),
        h("td", null, chips),
        h("td", { class: "num" }, fmt(row[1])),
        h("td", null, verdicts),
        h("td", null, h("span", { class: "snip" }, row[4]), h("span", { class: "snip resp" }, row[5]))
      );
      const toggle = () => {
        if (open.has(i)) {
          open.delete(i);
          hideDetail(tr);
        } else {
          open.add(i);
          showDetail(i, tr);
        }
      };
      tr.addEventListener("click", toggle);
      tr.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          toggle();
        }
      });
      return tr;
    }

    function hideDetail(tr) {
      tr.classList.remove("open");
      tr.setAttribute("aria-expanded", "false");
      const next = tr.nextElementSibling;
      if (next && next.classList.contains("detail-row")) next.remove();
    }

    function showDetail(i, tr) {
      hideDetail(tr);
      tr.classList.add("open");
      tr.setAttribute("aria-expanded", "true");
      const cell = h("td", { colspan: 6, class: "detail-cell" }, h("span", { class: "muted" }, "Loading…"));
      const detailRow = h("tr", { class: "detail-row" }, cell);
      tr.after(detailRow);
      const size = state.index.page_size;
      const n = Math.floor(i / size);
      EH.load(pageKey(n), pageSrc(n)).then(
        (page) => cell.replaceChildren(renderDetail(page[i % size])),
        (err) => cell.replaceChildren(h("span", { class: "worse" }, String(err.message || err)))
      );
    }

    function textBlock(text) {
      return h("pre", { class: "text" }, text);
    }

    function renderDetail(sample) {
      const parts = [];
      const link = "#s=" + encodeURIComponent(sample.id);
      parts.push(
        h("p", { class: "muted" }, "Sample ", h("code", null, sample.id), " · score ", fmt(sample.score), " · ",
          h("a", { href: link }, "link to this sample"))
      );
      parts.push(h("h4", null, sample.prompt.length > 1 ? "Prompt (user turns)" : "Prompt"));
      if (!sample.prompt.length) parts.push(h("p", { class: "muted" }, "(no prompt stored)"));
      sample.prompt.forEach((turn, t) => {
        if (sample.prompt.length > 1) parts.push(h("div", { class: "slot" }, "Turn " + (t + 1)));
        parts.push(textBlock(turn));
      });
      parts.push(h("h4", null, "Response"));
      if (!sample.responses.length) parts.push(h("p", { class: "muted" }, "(no response stored)"));
      sample.responses.forEach(([slot, text]) => {
        parts.push(h("div", { class: "slot" }, slot), textBlock(text));
      });
      if (sample.reference !== null) {
        parts.push(h("h4", null, "Reference"), textBlock(sample.reference));
      }
      if (sample.verdicts.length) {
        parts.push(h("h4", null, "Judge"));
        sample.verdicts.forEach((v) => {
          parts.push(
            h("div", { class: "verdict" },
              h("div", { class: "slot" }, v.slot, ": ", v.verdict, v.score === null ? "" : " (score " + fmt(v.score) + ")"),
              v.rationale === null ? null : textBlock(v.rationale))
          );
        });
      }
      const tags = Object.entries(sample.tags);
      if (tags.length) {
        parts.push(h("h4", null, "Tags"), h("p", null, tags.map(([k, v]) => h("span", { class: "chip" }, k + ": " + v))));
      }
      return h("div", { class: "sample-detail" }, parts);
    }

    function openFromHash() {
      const match = /^#s=(.*)$/.exec(window.location.hash);
      if (!match || !state.index) return;
      const id = decodeURIComponent(match[1]);
      const i = state.index.rows.findIndex((row) => row[0] === id);
      if (i < 0) return;
      search.value = "";
      tagSelects.forEach((t) => (t.select.value = ""));
      verdictSelect.value = "";
      scoreMin.value = scoreMax.value = "";
      open.add(i);
      apply(true);
      state.view = Math.floor(state.matches.indexOf(i) / ROWS_PER_VIEW);
      render();
      const tr = rowsBody.querySelector('tr[data-sample="' + CSS.escape(id) + '"]');
      if (tr) tr.scrollIntoView({ block: "center" });
    }

    const later = debounce(() => apply(true), 150);
    search.addEventListener("input", later);
    [scoreMin, scoreMax].forEach((input) => input.addEventListener("input", later));
    verdictSelect.addEventListener("change", () => apply(true));
    $("reset-filters").addEventListener("click", () => {
      search.value = "";
      scoreMin.value = scoreMax.value = "";
      verdictSelect.value = "";
      tagSelects.forEach((t) => (t.select.value = ""));
      apply(true);
    });
    $("prev-page").addEventListener("click", () => {
      state.view -= 1;
      render();
    });
    $("next-page").addEventListener("click", () => {
      state.view += 1;
      render();
    });
    window.addEventListener("hashchange", openFromHash);

    EH.load("index:" + cfg.key, cfg.base + "index.js").then(
      (index) => {
        state.index = index;
        buildFilters(index);
        apply(true);
        openFromHash();
      },
      (err) => {
        status.textContent = String(err.message || err);
      }
    );
  }

  // -- run comparison -------------------------------------------------------------------
  const SAMPLE_DIFFS_SHOWN = 25;

  function initCompare(cfg) {
    const selA = document.getElementById("run-a");
    const selB = document.getElementById("run-b");
    const status = document.getElementById("compare-status");
    const out = document.getElementById("compare-result");
    let ticket = 0;

    function show() {
      const a = selA.value;
      const b = selB.value;
      const mine = ++ticket;
      out.replaceChildren();
      if (a === b) {
        status.textContent = "Pick two different runs.";
        return;
      }
      const key = a + "|" + b;
      const src = cfg.pairs[key];
      if (!src) {
        status.textContent = "This pair was not precomputed (the runs share no task, or the pair is beyond the cap).";
        return;
      }
      status.textContent = "Loading comparison…";
      EH.load("compare:" + key, src).then(
        (result) => {
          if (mine !== ticket) return;
          status.textContent = "";
          out.replaceChildren(renderComparison(result, a, b));
        },
        (err) => {
          if (mine === ticket) status.textContent = String(err.message || err);
        }
      );
    }

    function runName(info, id) {
      const known = cfg.runs[id];
      return (known ? known.label : id) + (info && info.model ? " (" + info.model + ")" : "");
    }

    function renderComparison(result, a, b) {
      if (result.error) return h("p", { class: "warning" }, result.error);
      const parts = [];
      const regressions = result.regressions || [];
      parts.push(
        h("div", { class: "summary-line" },
          h("span", null, "A: ", h("strong", null, runName(result.run_a, a))),
          h("span", null, "→ B: ", h("strong", null, runName(result.run_b, b))),
          h("span", { class: "badge " + (result.passed ? "pill-sig" : "pill-bad") }, result.passed ? "passed" : "failed"),
          regressions.length
            ? h("span", { class: "badge pill-bad" }, "regressions: " + regressions.join(", "))
            : h("span", { class: "badge pill-ns" }, "no regressions"),
          h("span", { class: "muted" }, "α = " + result.alpha + (result.fail_if_worse === null || result.fail_if_worse === undefined ? "" : " · fail if worse by " + result.fail_if_worse)))
      );
      (result.warnings || []).forEach((w) => parts.push(h("p", { class: "warning" }, w)));
      if ((result.only_in_a || []).length) parts.push(h("p", { class: "muted" }, "Only in A: " + result.only_in_a.join(", ")));
      if ((result.only_in_b || []).length) parts.push(h("p", { class: "muted" }, "Only in B: " + result.only_in_b.join(", ")));
      const tasks = Object.entries(result.tasks || {});
      if (!tasks.length) parts.push(h("p", { class: "muted" }, "The runs share no task."));
      tasks.forEach(([task, entry]) => parts.push(renderTask(task, entry, b)));
      return h("div", null, parts);
    }

    function verdictCell(m) {
      if (m.regression) return h("span", { class: "badge pill-bad" }, "regression");
      if (m.significant === null || m.significant === undefined) return h("span", { class: "muted" }, "no test");
      if (!m.significant) return h("span", { class: "badge pill-ns" }, "not significant");
      const improved = (m.delta > 0) === (m.higher_is_better !== false);
      return h("span", { class: "badge " + (improved ? "pill-sig" : "pill-bad") }, improved ? "significantly better" : "significantly worse");
    }

    function renderTask(task, entry, b) {
      const taskLink = cfg.tasks[task];
      const head = h("h2", null, taskLink ? h("a", { href: taskLink }, task) : task,
        h("span", { class: "muted" }, " · " + entry.n_a + " vs " + entry.n_b + " samples, " + entry.n_shared + " shared"));
      const rows = (entry.metrics || []).map((m) => {
        const paired = Boolean(m.n_pairs);
        const good = m.delta !== null && m.delta !== 0 && m.significant
          ? ((m.delta > 0) === (m.higher_is_better !== false) ? "better" : "worse")
          : "";
        return h("tr", { "data-metric": m.metric },
          h("th", { scope: "row" }, m.metric, m.gated ? h("span", { class: "muted", title: "gated metric" }, " ●") : null),
          h("td", { class: "num" }, fmt(m.a)),
          h("td", { class: "num" }, fmt(m.b)),
          h("td", { class: "num delta " + good }, signed(m.delta)),
          h("td", { class: "num", title: m.ci && m.ci_method ? "CI: " + m.ci_method : null }, m.ci ? "[" + signed(m.ci[0]) + ", " + signed(m.ci[1]) + "]" : "–"),
          h("td", { class: "num" }, fmtP(m.p_value)),
          h("td", null, m.test || "–"),
          h("td", { class: "num" }, paired ? String(m.n_pairs) : "–"),
          h("td", { class: "num" }, paired ? m.better + " / " + m.worse + " / " + m.same : "–"),
          h("td", null, verdictCell(m)));
      });
      const table = h("div", { class: "scroll" },
        h("table", { class: "data compare-metrics" },
          h("thead", null, h("tr", null,
            ["Metric", "A", "B", "Δ (B − A)", "95% CI", "p", "Test", "Pairs", "B better / worse / same", "Result"].map((t, i) =>
              h("th", { class: i >= 1 && i <= 5 || i === 7 || i === 8 ? "num" : null }, t)))),
          h("tbody", null, rows)));
      return h("section", { class: "compare-task", "data-task": task }, head, table, renderSampleDiffs(task, entry, b));
    }

    function renderSampleDiffs(task, entry, b) {
      const samples = (entry.samples || []).slice().sort((x, y) => Math.abs(y.delta || 0) - Math.abs(x.delta || 0));
      if (!samples.length) return null;
      const page = (cfg.samples[b] || {})[task];
      const metric = (entry.metrics || []).find((m) => m.metric === entry.sample_metric);
      const higherIsBetter = !metric || metric.higher_is_better !== false;
      const tone = (d) => (!d ? "" : (d > 0) === higherIsBetter ? "better" : "worse");
      const total = entry.samples_total || samples.length;
      const body = h("tbody");
      let shown = 0;
      const more = h("button", { type: "button", class: "link" }, "Show all");
      const fill = (limit) => {
        samples.slice(shown, limit).forEach((s) => {
          const id = page ? h("a", { href: page + "#s=" + encodeURIComponent(s.sample_id) }, s.sample_id) : s.sample_id;
          body.appendChild(h("tr", null,
            h("td", null, h("code", null, id)),
            h("td", null, s.unit || "–"),
            h("td", { class: "num" }, fmt(s.a)),
            h("td", { class: "num" }, fmt(s.b)),
            h("td", { class: "num " + tone(s.delta) }, signed(s.delta))));
        });
        shown = Math.min(limit, samples.length);
        more.hidden = shown >= samples.length;
      };
      more.addEventListener("click", () => fill(samples.length));
      fill(SAMPLE_DIFFS_SHOWN);
      const note = total > samples.length ? " (the " + samples.length + " largest of " + total + ")" : "";
      return h("details", { class: "sample-diffs" },
        h("summary", null, "Per-sample differences: " + samples.length + note + ", largest first"),
        h("div", { class: "scroll" },
          h("table", { class: "data compact" },
            h("thead", null, h("tr", null, h("th", null, "Sample"), h("th", null, "Unit"), h("th", { class: "num" }, "A"), h("th", { class: "num" }, "B"), h("th", { class: "num" }, "Δ"))),
            body)),
        more);
    }

    selA.addEventListener("change", show);
    selB.addEventListener("change", show);
    document.getElementById("swap-runs").addEventListener("click", () => {
      const a = selA.value;
      selA.value = selB.value;
      selB.value = a;
      show();
    });
    show();
  }

  function start() {
    document.querySelectorAll("table.sortable").forEach(initSortable);
    const page = document.body.dataset.page;
    if (page === "samples") initSamples(readConfig());
    if (page === "compare") initCompare(readConfig());
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
