// The matdiff page: the script goes to POST /derive as the user types; the
// answers come back as `matdiff --format json` writes them and are typeset
// with KaTeX. The script and the settings live in the URL's fragment.
"use strict";

const $ = (id) => document.getElementById(id);
const script = $("script");
const BACKENDS = [["numpy", "NumPy"], ["jax", "JAX"], ["torch", "PyTorch"]];
const DEBOUNCE_MS = 250;

const settings = { layout: "denominator", vec: "row" };
// What the user opened stays open while answers are redrawn.
const openSteps = new Set();
const openCode = new Set();
let backend = "numpy";
let timer = null;
let controller = null;
let generation = 0;

// ---------------------------------------------------------------------------
// Elements and typesetting.

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function math(latex) {
  const box = el("div", { class: "math" });
  try {
    katex.render(latex, box, { displayMode: true, throwOnError: false, output: "htmlAndMathml" });
  } catch (e) {
    box.textContent = latex;
  }
  return box;
}

function shapeText(shape) {
  return shape ? `${shape[0]}×${shape[1]}` : "";
}

// ---------------------------------------------------------------------------
// The script and settings in the URL: #layout=…&vec=…&z=<deflate, base64url>.

function base64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unbase64url(s) {
  s = s.replace(/-/g, "+").replace(/_/g, "/");
  while (s.length % 4) s += "=";
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

async function through(bytes, stream) {
  const out = new Blob([bytes]).stream().pipeThrough(stream);
  return new Uint8Array(await new Response(out).arrayBuffer());
}

async function encodeScript(text) {
  const bytes = new TextEncoder().encode(text);
  if (typeof CompressionStream === "function") {
    return "z=" + base64url(await through(bytes, new CompressionStream("deflate-raw")));
  }
  return "s=" + base64url(bytes);
}

async function decodeScript(params) {
  try {
    if (params.has("z")) {
      const bytes = await through(unbase64url(params.get("z")), new DecompressionStream("deflate-raw"));
      return new TextDecoder().decode(bytes);
    }
    if (params.has("s")) return new TextDecoder().decode(unbase64url(params.get("s")));
  } catch (e) {
    setStatus("the link's script could not be read", "bad");
  }
  return null;
}

async function saveToUrl() {
  const encoded = await encodeScript(script.value);
  history.replaceState(null, "", `#layout=${settings.layout}&vec=${settings.vec}&${encoded}`);
}

function setSetting(name, value) {
  settings[name] = value;
  for (const input of document.querySelectorAll(`input[name="${name}"]`)) input.checked = input.value === value;
}

// ---------------------------------------------------------------------------
// Deriving.

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = kind || "";
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(derive, ms);
}

async function derive() {
  const mine = ++generation;
  if (controller) controller.abort();
  controller = new AbortController();
  saveToUrl();
  setStatus("deriving…");
  $("answers").classList.add("stale");
  const started = performance.now();
  let response, body;
  try {
    response = await fetch("/derive", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ script: script.value, layout: settings.layout, vec: settings.vec, steps: true, check: true, code: true }),
      signal: controller.signal,
    });
    body = await response.json();
  } catch (e) {
    if (e.name !== "AbortError" && mine === generation) setStatus("the server does not answer", "bad");
    return;
  }
  if (mine !== generation) return;
  $("answers").classList.remove("stale");
  if (!response.ok) {
    setStatus(body.refused || `the server refused (${response.status})`, "bad");
    if (response.status === 503) schedule(1000);
    return;
  }
  show(body, Math.round(performance.now() - started));
}

function show(body, ms) {
  const answers = $("answers");
  const definitions = $("definitions");
  showError(body.error);
  // A script that does not parse answers nothing: the last answers stay, faded,
  // until it does.
  if (body.error && !body.items.some((i) => i.definition === undefined)) {
    if (answers.childElementCount) answers.classList.add("stale");
    setStatus(body.error.line ? `error at line ${body.error.line}` : body.error.message, "bad");
    return;
  }
  answers.replaceChildren();
  definitions.replaceChildren();
  let count = 0;
  const seen = new Map();
  for (const item of body.items) {
    if (item.definition !== undefined) {
      definitions.append(el("span", {}, `${item.definition}: ${shapeText(item.shape)}`));
      continue;
    }
    // A key that survives redrawing: the query and how often it came before.
    const n = (seen.get(item.query) || 0) + 1;
    seen.set(item.query, n);
    const key = `${item.query}#${n}`;
    answers.append(item.gradients ? backwardCard(item, key) : answerCard(item, key));
    count += item.gradients ? item.gradients.length : 1;
  }
  if (body.error) setStatus(body.error.line ? `error at line ${body.error.line}` : body.error.message, "bad");
  else setStatus(`${count} answer${count === 1 ? "" : "s"} · ${ms} ms`, "ok");
}

// ---------------------------------------------------------------------------
// Answers.

/// The left-hand side in LaTeX: that of the last step (the answer itself).
function lhsLatex(a) {
  return a.steps && a.steps.length ? a.steps[a.steps.length - 1].lhs_latex : null;
}

function aligned(lines) {
  if (lines.length === 1) return lines[0].replace(" &= ", " = ");
  return `\\begin{aligned}${lines.join(" \\\\[0.5em] ")}\\end{aligned}`;
}

function answerLatex(a) {
  const lines = (a.adjoints || []).map((d) => `${d.name_latex} &= ${d.latex}`);
  const lhs = lhsLatex(a);
  lines.push(lhs ? `${lhs} &= ${a.latex}` : a.latex);
  return aligned(lines);
}

function badge(answers) {
  const checked = answers.filter((a) => a.check);
  const errors = answers.filter((a) => a.check_error);
  if (errors.length) return el("span", { class: "badge none", title: errors[0].check_error }, "not checked");
  if (!checked.length) return null;
  const worst = Math.max(...checked.map((a) => a.check.relative_error));
  const passed = checked.every((a) => a.check.passed);
  const text = `${passed ? "✓ checked" : "✗ check failed"} · rel. error ${worst.toExponential(1)}`;
  return el("span", {
    class: `badge check ${passed ? "ok" : "bad"}`,
    title: `largest relative error against finite differences (tolerance ${checked[0].check.tolerance})`,
  }, text);
}

function head(query, shape, answers) {
  return el("div", { class: "head" },
    el("span", { class: "query" }, query),
    shape ? el("span", { class: "shape" }, shape) : null,
    badge(answers));
}

/// What a step's line says beyond its two sides: the chain of factors, or
/// the vec⁻¹ it reshapes.
function rule(step, index) {
  const parts = step.line.split(" = ");
  const middle = parts.slice(parts[0] === step.lhs ? 1 : 0, -1).join(" = ");
  if (middle.includes("vec⁻¹")) return ["reshape", middle];
  if (middle) return ["chain rule", middle];
  if (index === 0 && /^d/.test(step.lhs)) return ["differential", ""];
  return ["identified", ""];
}

function stepsBox(steps, key, of) {
  if (!steps || !steps.length) return null;
  const box = el("details", { class: "steps" }, el("summary", {}, `Steps${of ? " of " + of : ""} (${steps.length})`));
  if (openSteps.has(key)) box.open = true;
  box.addEventListener("toggle", () => (box.open ? openSteps.add(key) : openSteps.delete(key)));
  const list = el("ol");
  steps.forEach((s, i) => {
    const [name, text] = rule(s, i);
    list.append(el("li", {}, math(`${s.lhs_latex} = ${s.latex}`),
      el("div", { class: "rule" }, el("b", {}, name), text ? ` ${text}` : "")));
  });
  box.append(list);
  return box;
}

function copy(text, button, label) {
  const done = () => {
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = label), 1200);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => fallbackCopy(text, done));
  } else {
    fallbackCopy(text, done);
  }
}

function fallbackCopy(text, done) {
  const area = el("textarea");
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
  done();
}

function codeBox(code, key) {
  if (!code) return null;
  const box = el("details", { class: "code-box" }, el("summary", {}, "Code"));
  if (openCode.has(key)) box.open = true;
  box.addEventListener("toggle", () => (box.open ? openCode.add(key) : openCode.delete(key)));
  const pre = el("pre", {}, el("code"));
  const text = (name) => (typeof code[name] === "string" ? code[name] : `# ${code[name].error}`);
  const tabs = el("div", { class: "tabs", role: "tablist" });
  const select = (name) => {
    backend = name;
    pre.firstChild.textContent = text(name);
    for (const b of tabs.querySelectorAll("[data-backend]")) b.setAttribute("aria-selected", String(b.dataset.backend === name));
  };
  for (const [name, label] of BACKENDS) {
    tabs.append(el("button", { type: "button", role: "tab", "data-backend": name, onclick: () => select(name) }, label));
  }
  const copyButton = el("button", { type: "button", class: "copy" }, "Copy");
  copyButton.addEventListener("click", () => copy(pre.textContent, copyButton, "Copy"));
  tabs.append(copyButton);
  box.append(el("div", { class: "code" }, tabs, pre));
  select(backend);
  return box;
}

function answerCard(a, key) {
  const card = el("article", { class: "answer", "data-query": a.query },
    head(a.query, shapeText(a.shape), [a]),
    math(answerLatex(a)),
    stepsBox(a.steps, key),
    codeBox(a.code, key));
  card.dataset.line = a.line;
  return card;
}

function backwardCard(b, key) {
  const lines = b.adjoints.map((d) => `${d.name_latex} &= ${d.latex}`);
  for (const g of b.gradients) lines.push(`${lhsLatex(g) || g.query} &= ${g.latex}`);
  const steps = b.gradients.map((g, i) => stepsBox(g.steps, `${key}/${i}`, g.query)).filter(Boolean);
  const card = el("article", { class: "answer backward", "data-query": b.query },
    head(b.query, "", b.gradients),
    math(aligned(lines)),
    ...steps,
    codeBox(b.code, key));
  card.dataset.line = b.line;
  return card;
}

// ---------------------------------------------------------------------------
// Errors, located in the script.

/// The UTF-16 offset of a 1-based line and column counted in characters.
function offsetOf(text, line, column) {
  let i = 0;
  for (let l = 1; l < line; l++) {
    const next = text.indexOf("\n", i);
    if (next < 0) return text.length;
    i = next + 1;
  }
  for (let c = 1; c < column && i < text.length && text[i] !== "\n"; c++) {
    i += text.codePointAt(i) > 0xffff ? 2 : 1;
  }
  return i;
}

let located = null;

function showError(error) {
  const box = $("error");
  const marks = $("highlights");
  located = null;
  if (!error) {
    box.hidden = true;
    marks.replaceChildren(script.value + "\n");
    return;
  }
  box.hidden = false;
  box.replaceChildren();
  if (error.line) {
    const text = script.value;
    const start = offsetOf(text, error.line, error.column);
    let end = offsetOf(text, error.end_line, error.end_column);
    if (end <= start) end = Math.min(start + 1, text.length);
    located = [start, end];
    // A span at the very end (an unclosed bracket) marks a space after it.
    const marked = text.slice(start, end).replace(/\n$/, " ") || " ";
    marks.replaceChildren(text.slice(0, start), el("mark", {}, marked), text.slice(end) + "\n");
    box.append(el("div", {},
      el("span", { class: "where" }, `line ${error.line}, column ${error.column}`), ": ", error.message,
      error.text ? el("span", {}, " — at ", el("code", {}, error.text)) : null));
    if (error.label) box.append(el("div", { class: "label" }, error.label));
    if (error.help) box.append(el("div", { class: "help" }, "help: " + error.help));
  } else {
    marks.replaceChildren(script.value + "\n");
    box.append(el("div", {}, el("span", { class: "where" }, "stopped"), ": ", error.message));
  }
  syncScroll();
}

function syncScroll() {
  $("backdrop").scrollTop = script.scrollTop;
  $("backdrop").scrollLeft = script.scrollLeft;
}

// ---------------------------------------------------------------------------
// Start.

async function start() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("layout")) setSetting("layout", params.get("layout") === "numerator" ? "numerator" : "denominator");
  if (params.get("vec")) setSetting("vec", params.get("vec") === "col" ? "col" : "row");
  const fromUrl = await decodeScript(params);
  let examples = [];
  try {
    examples = await (await fetch("/examples.json")).json();
  } catch (e) {
    setStatus("the server does not answer", "bad");
  }
  const menu = $("examples");
  for (const ex of examples) menu.append(el("option", { value: ex.name }, ex.name));
  menu.addEventListener("change", () => {
    const ex = examples.find((e) => e.name === menu.value);
    if (!ex) return;
    script.value = ex.script;
    showError(null);
    schedule(0);
  });
  if (fromUrl !== null) {
    script.value = fromUrl;
  } else {
    const seed = examples.find((e) => e.name === "backprop");
    if (seed) {
      script.value = seed.script;
      menu.value = "backprop";
    }
  }
  script.addEventListener("input", () => {
    $("highlights").replaceChildren(script.value + "\n");
    schedule(DEBOUNCE_MS);
  });
  script.addEventListener("scroll", syncScroll);
  for (const input of document.querySelectorAll("input[type=radio]")) {
    input.addEventListener("change", () => {
      settings[input.name] = input.value;
      schedule(0);
    });
  }
  $("error").addEventListener("click", () => {
    if (!located) return;
    script.focus();
    script.setSelectionRange(located[0], located[1]);
  });
  $("share").addEventListener("click", async () => {
    await saveToUrl();
    copy(location.href, $("share"), "Copy link");
  });
  showError(null);
  schedule(0);
}

start();
