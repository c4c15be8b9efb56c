// The leaderboard's web report: draws what harness/report/web.py computed (the JSON in #data).
// No network: plotly comes from assets/plotly.min.js beside the page, crops from crops/.
"use strict";

const DATA = JSON.parse(document.getElementById("data").textContent);
const page = document.getElementById("page");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const fmt = (value, digits = 2, unit = "") =>
  value === null || value === undefined ? "n/a" : `${value.toFixed(digits)}${unit}`;
const signed = (value, unit = " %") => (value === null ? "n/a" : `${value >= 0 ? "+" : ""}${value.toFixed(2)}${unit}`);

// A table whose headers sort its rows by the cells' data-value (numbers, n/a last); click again to reverse.
function table(header, rows, className) {
  const head = el("tr", {}, ...header.map((name) => el("th", { title: "click to sort" }, name)));
  const body = el("tbody");
  for (const row of rows) {
    body.append(el("tr", { class: row.className || null }, ...row.cells.map((cell) =>
      el("td", { "data-value": cell.value ?? "", title: cell.title || null }, cell.text))));
  }
  const node = el("table", { class: className }, el("thead", {}, head), body);
  head.querySelectorAll("th").forEach((th, index) => th.addEventListener("click", () => sortBy(node, th, index)));
  return node;
}

function sortBy(node, th, index) {
  const descending = th.dataset.sorted === "asc";
  node.querySelectorAll("th").forEach((other) => delete other.dataset.sorted);
  th.dataset.sorted = descending ? "desc" : "asc";
  const body = node.tBodies[0];
  const key = (tr) => tr.cells[index].dataset.value;
  const rows = [...body.rows].sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    if (x === "" || y === "") return (x === "") - (y === "");  // n/a last either way
    const [nx, ny] = [Number(x), Number(y)];
    const order = Number.isNaN(nx) || Number.isNaN(ny) ? x.localeCompare(y) : nx - ny;
    return descending ? -order : order;
  });
  body.append(...rows);
}

const text = (value) => ({ text: String(value ?? ""), value: value ?? "" });
const number = (value, shown) => ({ text: shown, value: value ?? "" });

function notes() {
  const items = [...DATA.notes];
  if (DATA.demo_scale) {
    items.unshift("Demo scale: the learned models here trained for far fewer steps than the paper's recipe. " +
      "Their curves show the pipeline at work, not 3DM-WeConvene's published results.");
  }
  return items.length ? el("ul", { class: "notes" }, ...items.map((note) => el("li", {}, note))) : "";
}

function traceStyle(trace) {
  let name = trace.name;
  if (trace.anchor) name += " [anchor]";
  if (trace.learned) name += DATA.demo_scale ? " [learned, demo scale]" : " [learned]";
  return {
    name, x: trace.x, y: trace.y, type: "scatter",
    mode: trace.published ? "lines" : "lines+markers",
    line: { dash: trace.published ? "dash" : trace.learned ? "dot" : "solid", width: trace.anchor ? 3 : 1.5 },
    opacity: trace.published ? 0.7 : 1,
    meta: { published: trace.published, codec: trace.codec || null },
    customdata: trace.n ? trace.n.map((n, i) => [n, trace.ladder[i]]) : null,
    hovertemplate: trace.n
      ? "%{fullData.name}<br>%{x:.4f} bpp, %{y:.2f}<br>ladder %{customdata[1]}, %{customdata[0]} images<extra></extra>"
      : "%{fullData.name}<br>%{x:.4f} bpp, %{y:.2f}<extra></extra>",
  };
}

// One RD plot; clicking a legend entry hides that codec (plotly's default), the button switches log/linear bpp.
function rdPlot(id, title, ylabel, traces) {
  const box = el("div", { class: "rd-plot", id, "data-traces": traces.length });
  const toggle = el("button", { type: "button", class: "log-toggle" }, "log bpp");
  toggle.addEventListener("click", () => {
    const log = box.layout.xaxis.type !== "log";
    Plotly.relayout(box, { "xaxis.type": log ? "log" : "linear", "xaxis.autorange": true });
    toggle.textContent = log ? "linear bpp" : "log bpp";
  });
  const measured = traces.filter((t) => !t.published).flatMap((t) => t.x.filter((x) => x !== null));
  const layout = {
    title: { text: title, font: { size: 14 } }, height: 420, margin: { t: 40, r: 10, b: 45, l: 55 },
    xaxis: { title: { text: "bits per pixel" }, range: measured.length ? [0, Math.max(...measured) * 1.1] : undefined },
    yaxis: { title: { text: ylabel } }, legend: { font: { size: 11 } },
  };
  requestAnimationFrame(() => Plotly.newPlot(box, traces.map(traceStyle), layout, { displaylogo: false, responsive: true }));
  return el("div", { class: "plot" }, toggle, box);
}

function bdTables(dataset) {
  const anchor = DATA.provenance.anchor;
  const intro = el("p", {}, `Anchor: ${anchor.codec} (config ${anchor.config}; ${anchor.versions.join(", ") || "not run"}). ` +
    "BD-rate: log-rate interpolated over the common quality range (negative = fewer bits than the anchor). " +
    "PCHIP is the report's method, with its 95 % image-bootstrap interval; cubic (VCEG-M33's fit) and Akima " +
    "follow the bjontegaard package. Values in parentheses failed a reliability check: hover the flags.");
  const parts = [intro];
  const metrics = [...new Set(dataset.bdrate.map((row) => row.metric))];
  for (const metric of metrics) {
    const rows = dataset.bdrate.filter((row) => row.metric === metric);
    if (!rows.some((row) => !row.is_anchor)) {
      parts.push(el("p", { class: "empty" }, `${rows[0].metric_name}: no curve besides the anchor, so no BD-rate.`));
      continue;
    }
    const bd = (value, row) => (row.reliable || value === null ? signed(value) : `(${signed(value)})`);
    parts.push(el("h4", {}, rows[0].metric_name), table(
      ["Method", "BD-rate (PCHIP)", "95 % CI", "Cubic", "Akima", "BD-quality (dB)", "Common quality range",
        "Points (test / anchor)", "Images", "Flags"],
      rows.map((row) => ({
        className: row.is_anchor ? "anchor" : row.reliable ? null : "flagged",
        cells: [
          text(row.is_anchor ? `${row.label} [anchor]` : row.label),
          number(row.pchip, row.is_anchor ? "0.0" : bd(row.pchip, row)),
          number(row.ci_low, row.ci_low === null || row.is_anchor ? "-" : `[${signed(row.ci_low, "")}, ${signed(row.ci_high, "")}]`),
          number(row.cubic, row.is_anchor ? "0.0" : bd(row.cubic, row)),
          number(row.akima, row.is_anchor ? "0.0" : bd(row.akima, row)),
          number(row.bd_quality, row.is_anchor ? "-" : signed(row.bd_quality, " dB")),
          number(row.quality_lo, row.quality_lo === null ? "-" : `${fmt(row.quality_lo)} .. ${fmt(row.quality_hi)}`),
          number(row.points, `${row.points} / ${row.anchor_points}`),
          number(row.images, String(row.images)),
          { text: row.flags, value: row.flags, title: row.flags_help || null },
        ],
      })), `bdrate metric-${metric}`));
  }
  return parts;
}

function timingTable(dataset) {
  const memory = DATA.memory.map((column) => (column.startsWith("enc") ? "Enc. peak memory" : "Dec. peak memory"));
  const seconds = (value) => number(value, value === null ? "-" : `${value.toPrecision(3)} s`);
  const rest = (total, network) => (network === null ? null : Math.max(total - network, 0));
  return [
    el("p", {}, "Seconds per image, wall clock, on the devices listed. Learned codecs: network = the analysis " +
      "(g_a) or synthesis (g_s) transform, timed apart after each cell; entropy = the rest of the mean " +
      "(entropy model and rANS coder)."),
    table(["Method", "Enc. mean", "Dec. mean", "Enc. network", "Enc. entropy", "Dec. network", "Dec. entropy",
      "Enc. median", "Dec. median", "Encodes", "Device", "Precision", "#Params", ...memory],
    dataset.timing.map((row) => ({
      cells: [text(row.label), seconds(row.enc_s), seconds(row.dec_s), seconds(row.enc_net_s),
        seconds(rest(row.enc_s, row.enc_net_s)), seconds(row.dec_net_s), seconds(rest(row.dec_s, row.dec_net_s)),
        seconds(row.enc_median_s), seconds(row.dec_median_s), number(row.encodes, String(row.encodes)),
        text(row.device), text(row.precision),
        number(row.params_m, row.params_m === null ? "-" : `${row.params_m.toFixed(2)} M`),
        ...DATA.memory.map((column) => number(row[column], row[column] === null ? "-" : `${(row[column] / 2 ** 20).toFixed(1)} MiB`))],
    })), "timing"),
  ];
}

function bitsTable(dataset) {
  if (!dataset.bits.length) return [];
  const bits = (value) => number(value, value === null ? "-" : value.toFixed(0));
  return [el("h3", {}, "Learned models: estimated against actual bits"), el("details", {},
    el("summary", {}, `Per image and λ (${dataset.bits.length} rows): the bits the entropy model's likelihoods ` +
      "estimate, the bitstream's bits (container header included), their ratio, and the estimated bits spent on " +
      "the padding to the network's stride."),
    table(["Method", "Image", "λ", "Estimated bits", "Bitstream bits", "Bitstream / estimate", "Padding bits"],
      dataset.bits.map((row) => ({
        cells: [text(row.label), text(row.image), number(row.quality, String(row.quality)), bits(row.est_bits),
          bits(row.bits), number(row.est_bits && row.bits / row.est_bits, row.est_bits ? (row.bits / row.est_bits).toFixed(3) : "-"),
          bits(row.pad_bits)],
      })), "bits"))];
}

// Synchronised zoom and pan: every crop view shares one transform.
const view = { scale: 2, x: 0, y: 0 };
function applyView(root) {
  root.querySelectorAll(".crop-view img").forEach((img) => {
    img.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
  });
}
function syncViews(root) {
  root.querySelectorAll(".crop-view").forEach((box) => {
    box.addEventListener("wheel", (event) => {
      event.preventDefault();
      const factor = event.deltaY < 0 ? 1.25 : 0.8;
      const rect = box.getBoundingClientRect();
      const [px, py] = [event.clientX - rect.left, event.clientY - rect.top];
      view.x = px - (px - view.x) * factor;  // the pixel under the pointer stays put
      view.y = py - (py - view.y) * factor;
      view.scale *= factor;
      applyView(root);
    });
    box.addEventListener("pointerdown", (event) => {
      const start = { x: event.clientX - view.x, y: event.clientY - view.y };
      const move = (e) => { view.x = e.clientX - start.x; view.y = e.clientY - start.y; applyView(root); };
      const up = () => { window.removeEventListener("pointermove", move); window.removeEventListener("pointerup", up); };
      window.addEventListener("pointermove", move);
      window.addEventListener("pointerup", up);
    });
  });
  applyView(root);
}

function cropView(caption, src) {
  const img = el("img", { src, alt: caption, draggable: "false" });
  const box = el("div", { class: "crop-view" }, img);
  img.addEventListener("error", () => box.replaceChildren(el("p", { class: "missing" }, `crop missing: ${src}`)));
  return el("figure", { class: "crop" }, box, el("figcaption", {}, caption));
}

function nearest(points, bpp) {
  return points.reduce((best, point) =>
    (!best || Math.abs(Math.log(point.bpp / bpp)) < Math.abs(Math.log(best.bpp / bpp)) ? point : best), null);
}

function imageView(dataset, index) {
  const images = dataset.per_image;
  const select = el("select", { class: "image-select" },
    ...images.map((image, i) => el("option", { value: i }, image.image)));
  const rates = images.flatMap((image) => image.curves.flatMap((curve) => curve.x)).filter((x) => x > 0);
  const slider = el("input", { type: "range", class: "bpp-select", min: Math.log(Math.min(...rates)),
    max: Math.log(Math.max(...rates)), step: "any", value: Math.log(Math.min(...rates) * 4) });
  const rateText = el("span", { class: "bpp-value" });
  const body = el("div", { class: "image-body" });
  const metric = dataset.plots.length ? dataset.plots[0] : null;

  function show() {
    const image = images[Number(select.value)];
    const bpp = Math.exp(Number(slider.value));
    rateText.textContent = `${bpp.toFixed(3)} bpp`;
    const crops = [image.original
      ? cropView(`original (centre of ${image.width}x${image.height})`, image.original)
      : el("figure", { class: "crop" }, el("p", { class: "missing" }, "no crop of the original was kept"))];
    for (const codec of image.crops) {
      const point = nearest(codec.points, bpp);
      crops.push(point
        ? cropView(`${codec.name}: ladder ${point.quality}, ${point.bpp.toFixed(3)} bpp, ${fmt(point.psnr)} dB`, point.src)
        : el("figure", { class: "crop" }, el("p", { class: "missing" }, `${codec.name}: no crop kept for this image`)));
    }
    const perImage = image.bd.length
      ? table(["Method", "Metric", "BD-rate (PCHIP)", "Flags"], image.bd.map((row) => ({
        cells: [text(row.label), text(row.metric_name),
          number(row.value, row.reliable || row.value === null ? signed(row.value) : `(${signed(row.value)})`),
          { text: row.flags_help ? "flagged" : "", value: row.flags_help, title: row.flags_help || null }],
      })), "per-image-bd")
      : el("p", { class: "empty" }, "No per-image BD-rates (no curve besides the anchor).");
    const plot = metric ? rdPlot(`image-plot-${index}`, `${image.image}: ${metric.ylabel}`, metric.ylabel,
      image.curves.map((curve) => ({ name: curve.name, x: curve.x, y: curve.y[metric.metric],
        n: curve.x.map(() => 1), ladder: curve.ladder, published: false }))) : "";
    const grid = el("div", { class: "crops", "data-image": image.image }, ...crops);
    body.replaceChildren(el("div", { class: "image-top" }, plot, perImage), grid);
    syncViews(grid);
  }
  select.addEventListener("change", show);
  slider.addEventListener("input", show);
  requestAnimationFrame(show);
  return [el("p", { class: "controls" }, "Image ", select, " bit rate ", slider, " ", rateText,
    el("span", { class: "hint" }, " (crops at full resolution: wheel zooms, drag pans, all views together)")), body];
}

function datasetSection(dataset, index) {
  return el("section", { class: "dataset" },
    el("h2", {}, `${dataset.name} (${dataset.images} images)`),
    el("h3", {}, "Rate-distortion curves"),
    el("div", { class: "plots" }, ...dataset.plots.map((plot, i) =>
      rdPlot(`rd-${index}-${plot.metric}`, `${dataset.name}: ${plot.ylabel}`, plot.ylabel, plot.traces))),
    el("h3", {}, "BD-rate"), ...bdTables(dataset),
    el("h3", {}, "Timing, parameters and memory"), ...timingTable(dataset), ...bitsTable(dataset),
    el("h3", {}, "Per image"), ...imageView(dataset, index));
}

function provenance() {
  const p = DATA.provenance;
  if (!p.harness) return "";
  const models = (p.models || []).map((m) => ({
    cells: [text(m.curve), text(m.variant), number(m.lambda, String(m.lambda)), number(m.params, `${(m.params / 1e6).toFixed(2)} M`),
      number(m.steps, String(m.steps)), text(m.imported || m.data), text(m.device)],
  }));
  return el("section", { class: "provenance" }, el("h2", {}, "Provenance"),
    el("ul", {},
      el("li", {}, `harness ${p.harness.join(", ")}, commit ${p.commits.join(", ") || "?"}`),
      el("li", {}, `devices: ${p.devices.join("; ")}`),
      el("li", {}, `page built by: ${p.command || "(not from the command line)"}; plotly ${p.plotly}`)),
    el("h3", {}, "Codec versions"),
    table(["Curve", "Versions"], p.codecs.map((c) => ({ cells: [text(c.curve), text(c.versions.join("; "))] })), "versions"),
    models.length ? el("h3", {}, "Model cards") : "",
    models.length ? table(["Curve", "Variant", "λ", "Parameters", "Steps", "Data", "Device"], models, "models") : "");
}

page.append(el("h1", {}, `Leaderboard run ${DATA.run}`), notes());
if (!DATA.datasets.length) page.append(el("p", { class: "empty" }, "Nothing to show: no usable results (see above)."));
DATA.datasets.forEach((dataset, index) => page.append(datasetSection(dataset, index)));
page.append(provenance());
