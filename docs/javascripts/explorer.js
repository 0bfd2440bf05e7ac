// The report's three explorers, drawn from the data the pipeline wrote (site_assets/*/explorer.js sets
// window.reportData): attention between tokens, every decoded test sentence, and the images behind each
// cell of the confusion matrix. Plain DOM and SVG, no library, nothing fetched: it works from file:// too.
(function () {
  "use strict";

  const HEAD_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const KINDS = {
    encoder_self: "encoder self-attention",
    decoder_self: "decoder self-attention",
    decoder_source: "decoder–source attention",
  };
  const SVG = "http://www.w3.org/2000/svg";

  function element(tag, attributes, text) {
    const node = tag.startsWith("svg:")
      ? document.createElementNS(SVG, tag.slice(4))
      : document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function select(label, name, options) {
    const wrapper = element("label", { class: "explorer-control" }, label + " ");
    const menu = element("select", { name: name });
    options.forEach(([value, text]) => menu.appendChild(element("option", { value: value }, text)));
    wrapper.appendChild(menu);
    return [wrapper, menu];
  }

  // ---- attention: queries on the right, keys on the left, one line per (query, key, head) -------------------

  function attentionExplorer(root, data) {
    const examples = data.attention;
    const controls = element("div", { class: "explorer-controls" });
    const [exampleLabel, exampleMenu] = select("Sentence", "example",
      examples.map((e, i) => [i, `${e.case} ${i + 1}: ${e.source}`]));
    const [kindLabel, kindMenu] = select("Attention", "kind", Object.entries(KINDS));
    const layers = examples[0].weights.encoder_self.length;
    const heads = examples[0].weights.encoder_self[0].length;
    const [layerLabel, layerMenu] = select("Layer", "layer",
      Array.from({ length: layers }, (_, i) => [i, `layer ${i + 1}`]));
    const [headLabel, headMenu] = select("Head", "head",
      [["all", "all heads"], ...Array.from({ length: heads }, (_, i) => [i, `head ${i + 1}`])]);
    [exampleLabel, kindLabel, layerLabel, headLabel].forEach((c) => controls.appendChild(c));
    const figure = element("div", { class: "attention-figure" });
    const caption = element("p", { class: "attention-caption" });
    root.append(controls, figure, caption);

    function tokensFor(example, kind) {
      const source = example.source_tokens;
      const target = example.target_tokens;
      return { encoder_self: [source, source], decoder_self: [target, target],
        decoder_source: [target, source] }[kind];  // [queries, keys]
    }

    function draw() {
      const example = examples[Number(exampleMenu.value)];
      const kind = kindMenu.value;
      const layer = Number(layerMenu.value);
      const [queries, keys] = tokensFor(example, kind);
      const weights = example.weights[kind][layer];  // [head][query][key]
      const shownHeads = headMenu.value === "all" ? weights.map((_, h) => h) : [Number(headMenu.value)];
      const rowHeight = 22;
      const height = Math.max(queries.length, keys.length) * rowHeight + 10;
      const svg = element("svg:svg", { width: 520, height: height, class: "attention-svg",
        role: "img", "aria-label": `${KINDS[kind]}, layer ${layer + 1}` });
      const y = (i) => 16 + i * rowHeight;
      for (const h of shownHeads) {
        weights[h].forEach((row, q) => row.forEach((w, k) => {
          svg.appendChild(element("svg:line", { x1: 150, y1: y(k) - 4, x2: 370, y2: y(q) - 4,
            stroke: HEAD_COLOURS[h % HEAD_COLOURS.length], "stroke-width": 2, "stroke-opacity": w,
            class: "attention-line", "data-query": q, "data-key": k, "data-head": h }));
        }));
      }
      keys.forEach((token, k) => svg.appendChild(element("svg:text", { x: 140, y: y(k), "text-anchor": "end",
        class: "attention-token", "data-side": "key", "data-index": k }, token)));
      queries.forEach((token, q) => svg.appendChild(element("svg:text", { x: 380, y: y(q),
        class: "attention-token", "data-side": "query", "data-index": q }, token)));
      svg.querySelectorAll(".attention-token").forEach((token) => {
        const side = token.dataset.side;
        const index = token.dataset.index;
        token.addEventListener("mouseenter", () => {
          svg.querySelectorAll(".attention-line").forEach((line) => {
            const mine = (side === "query" ? line.dataset.query : line.dataset.key) === index;
            line.classList.toggle("attention-hidden", !mine);
          });
          token.classList.add("attention-active");
        });
        token.addEventListener("mouseleave", () => {
          svg.querySelectorAll(".attention-hidden").forEach((line) => line.classList.remove("attention-hidden"));
          token.classList.remove("attention-active");
        });
      });
      figure.replaceChildren(svg);
      caption.textContent = `${KINDS[kind]}, layer ${layer + 1}, ` +
        (shownHeads.length > 1 ? `all ${shownHeads.length} heads (one colour each)` : `head ${shownHeads[0] + 1}`) +
        `: keys on the left, queries on the right; a line's opacity is its weight. Output: “${example.output}”.`;
    }

    [exampleMenu, kindMenu, layerMenu, headMenu].forEach((menu) => menu.addEventListener("change", draw));
    draw();
  }

  // ---- every decoded sentence: search and sort ----------------------------------------------------------------

  function decodeExplorer(root, data) {
    const rows = data.decodes;
    const columns = [["source", `source (${data.languages[0]})`], ["references", `references (${data.languages[1]})`],
      ["greedy", "greedy"], ["beam", "beam"], ["bleu", "sentence BLEU"], ["chrf", "chrF"]];
    const search = element("input", { type: "search", class: "decode-search",
      placeholder: "Search every sentence…", "aria-label": "Search the decoded sentences" });
    const count = element("p", { class: "decode-count" });
    const table = element("table", { class: "decode-table" });
    const head = element("tr");
    let sortKey = null;
    let ascending = true;
    columns.forEach(([key, title]) => {
      const th = element("th", { "data-key": key, tabindex: 0, role: "button" }, title);
      th.addEventListener("click", () => {
        ascending = sortKey === key ? !ascending : true;
        sortKey = key;
        render();
      });
      head.appendChild(th);
    });
    table.appendChild(element("thead")).appendChild(head);
    const body = table.appendChild(element("tbody"));
    root.append(search, count, table);
    const text = (row, key) => (Array.isArray(row[key]) ? row[key].join(" · ") : String(row[key]));

    function render() {
      const query = search.value.trim().toLowerCase();
      let shown = rows.filter((row) => !query ||
        columns.some(([key]) => text(row, key).toLowerCase().includes(query)));
      if (sortKey) {
        shown = shown.slice().sort((a, b) => {
          const order = typeof a[sortKey] === "number" ? a[sortKey] - b[sortKey]
            : text(a, sortKey).localeCompare(text(b, sortKey));
          return ascending ? order : -order;
        });
      }
      head.querySelectorAll("th").forEach((th) => th.setAttribute("aria-sort",
        th.dataset.key === sortKey ? (ascending ? "ascending" : "descending") : "none"));
      body.replaceChildren(...shown.map((row) => {
        const tr = element("tr");
        columns.forEach(([key]) => tr.appendChild(element("td", { "data-key": key },
          typeof row[key] === "number" ? row[key].toFixed(1) : text(row, key))));
        return tr;
      }));
      count.textContent = `${shown.length} of ${rows.length} test sentences`;
    }

    search.addEventListener("input", render);
    render();
  }

  // ---- confusion matrix: click a cell, see its images ---------------------------------------------------------

  function confusionExplorer(root, data, assets) {
    const n = data.classes.length;
    const table = element("table", { class: "confusion-table" });
    const header = element("tr");
    header.appendChild(element("th", {}, "true ↓ / predicted →"));
    data.classes.forEach((name) => header.appendChild(element("th", {}, name)));
    table.appendChild(header);
    const rowTotals = data.counts.map((row) => row.reduce((a, b) => a + b, 0));
    const panel = element("div", { class: "confusion-panel", "aria-live": "polite" },
      "Click a cell to see its test images, most confident first.");
    for (let t = 0; t < n; t++) {
      const tr = element("tr");
      tr.appendChild(element("th", {}, data.classes[t]));
      for (let p = 0; p < n; p++) {
        const count = data.counts[t][p];
        const share = rowTotals[t] ? count / rowTotals[t] : 0;
        const td = element("td", { "data-true": t, "data-pred": p, tabindex: 0, role: "button",
          class: t === p ? "confusion-cell diagonal" : "confusion-cell",
          style: `--share: ${share.toFixed(3)}` }, String(count));
        td.addEventListener("click", () => show(t, p));
        tr.appendChild(td);
      }
      table.appendChild(tr);
    }
    root.append(table, panel);
    const scale = 2;

    function show(t, p) {
      const images = data.cells[`${t},${p}`] || [];
      const title = element("p", {}, `true ${data.classes[t]}, predicted ${data.classes[p]}: ` +
        `${data.counts[t][p]} test images` + (images.length ? `, the ${images.length} most confident shown` : ""));
      const strip = element("div", { class: "confusion-thumbs" });
      images.forEach((image) => {
        const thumb = element("span", { class: "confusion-thumb", "data-index": image.index,
          title: `test image ${image.index}, confidence ${(100 * image.confidence).toFixed(1)}%` });
        thumb.style.backgroundImage = `url("${assets}/${data.sprite}")`;
        thumb.style.backgroundPosition = `-${image.x * scale}px -${image.y * scale}px`;
        thumb.style.backgroundSize = `${data.columns * data.size * scale}px auto`;
        thumb.style.width = thumb.style.height = `${data.size * scale}px`;
        strip.appendChild(thumb);
      });
      panel.replaceChildren(title, strip);
      table.querySelectorAll(".selected").forEach((cell) => cell.classList.remove("selected"));
      table.querySelector(`td[data-true="${t}"][data-pred="${p}"]`).classList.add("selected");
    }
  }

  function start() {
    const data = window.reportData || {};
    document.querySelectorAll(".attention-explorer").forEach((root) => data.translation && attentionExplorer(root, data.translation));
    document.querySelectorAll(".decode-explorer").forEach((root) => data.translation && decodeExplorer(root, data.translation));
    document.querySelectorAll(".confusion-explorer").forEach((root) =>
      data.confusion && confusionExplorer(root, data.confusion, root.dataset.assets));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
