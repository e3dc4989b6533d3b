// app.js: the doctor's page: sign in with a token, upload X-rays, show each prediction with its
// heat map, and the recent history. No framework, no build step; api.js talks to the server.
// Tested in a real Chromium by tests/browser.mjs.
import { ApiError, predict, history, heatmapUrl } from './api.js';

const TOKEN_KEY = 'pneumo.token';
const TYPES = new Set(['image/jpeg', 'image/png']);
const PARALLEL = 3;
const $ = (sel, root = document) => root.querySelector(sel);

let token = sessionStorage.getItem(TOKEN_KEY);
let blobUrls = [];
const names = new Map(); // sha256 -> file name, for this tab's uploads (the server keeps no names)
let refreshTimer = null;

// ---- sign in / out ----

function showSignIn(message = '') {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(refreshTimer);
  $('#workspace').hidden = true;
  $('#account').hidden = true;
  $('#signin').hidden = false;
  $('#signin-error').textContent = message;
  $('#token').value = '';
  $('#token').focus();
}

function showWorkspace() {
  $('#signin').hidden = true;
  $('#workspace').hidden = false;
  $('#account').hidden = false;
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => { if (!document.hidden) refreshHistory(); }, 30000);
}

async function signIn(event) {
  event.preventDefault();
  const value = $('#token').value.trim();
  if (!value) {
    $('#signin-error').textContent = 'Enter your access token.';
    return;
  }
  const button = $('#signin-button');
  button.disabled = true;
  try {
    renderHistory(await history(value));
    token = value;
    sessionStorage.setItem(TOKEN_KEY, token);
    showWorkspace();
    $('#files').focus();
  } catch (err) {
    $('#signin-error').textContent = err.status === 401
      ? 'This token was not accepted. Check it and try again.'
      : describe(err);
  } finally {
    button.disabled = false;
  }
}

// ---- errors in words ----

function describe(err) {
  if (!(err instanceof ApiError)) return `Unexpected error: ${err.message}`;
  const detail = err.message ? ` (server: ${err.message})` : '';
  switch (err.status) {
    case 0: return err.message;
    case 400: return `The file could not be read as an image${detail}.`;
    case 413: return 'The file is too large (at most 20 MB).';
    case 415: return `This file is not a JPEG or PNG image${detail}.`;
    case 429: return 'Too many requests in a short time. Wait a moment and try again.';
    case 503: return `The server is busy; try again${err.retryAfter ? ` in ${err.retryAfter} s` : ''}.`;
    default: return `The server answered ${err.status}${detail}.`;
  }
}

function handleAuth(err) {
  if (err instanceof ApiError && err.status === 401) {
    showSignIn('Your session is no longer valid. Please sign in again.');
    return true;
  }
  return false;
}

// ---- results ----

// One decimal; a saturated probability is not shown as a certainty.
// A no-break space keeps the number and its unit together.
const pct = (p) => {
  if (p > 0.999) return '>\u00a099.9\u00a0%';
  if (p < 0.001) return '<\u00a00.1\u00a0%';
  return `${(p * 100).toFixed(1)}\u00a0%`;
};

// The server's label decides; the words say where the probability lies against the threshold.
function verdict(r) {
  const why = r.probability > r.threshold ? 'above' : r.probability < r.threshold ? 'below' : 'at';
  return r.label === 'PNEUMONIA'
    ? { cls: 'positive', text: 'Pneumonia suspected', why }
    : { cls: 'negative', text: 'No pneumonia detected', why };
}

function addCard(file) {
  const card = $('#result-template').content.firstElementChild.cloneNode(true);
  const url = URL.createObjectURL(file);
  blobUrls.push(url);
  const preview = $('.preview', card);
  preview.alt = `X-ray ${file.name}`;
  preview.addEventListener('error', () => {
    const none = document.createElement('div');
    none.className = 'no-preview';
    none.textContent = 'No preview';
    preview.replaceWith(none);
  }, { once: true });
  preview.src = url;
  $('.name', card).textContent = file.name;
  $('#results').prepend(card);
  $('#results-empty').hidden = true;
  $('#clear').hidden = false;
  return card;
}

function showResult(card, r) {
  const v = verdict(r);
  $('.status', card).hidden = true;
  const label = $('.label', card);
  label.className = `label ${v.cls}`;
  label.textContent = v.text;
  card.classList.add(v.cls);
  const bar = $('.bar', card);
  bar.style.setProperty('--p', String(r.probability));
  bar.style.setProperty('--t', String(r.threshold));
  const prob = $('.prob', card);
  prob.replaceChildren('Probability of pneumonia ', Object.assign(document.createElement('strong'),
    { textContent: pct(r.probability) }), `, ${v.why} the decision threshold of ${pct(r.threshold)}.`);
  $('.raw', card).textContent = r.label;
  $('.model', card).textContent = r.model || r.model_id || 'unknown';
  $('.model', card).title = r.model_id ? `model id ${r.model_id}` : '';
  $('.cached', card).textContent = r.cached ? 'from cache (analysed before)'
    : `computed now${Number.isFinite(r.latency_ms) ? ` in ${Math.round(r.latency_ms)} ms` : ''}`;
  const toggle = $('.toggle', card);
  toggle.addEventListener('click', () => toggleHeatmap(card, r, toggle));
  $('.outcome', card).hidden = false;
}

function showError(card, err) {
  const status = $('.status', card);
  status.className = 'status error';
  status.setAttribute('role', 'alert');
  status.textContent = describe(err);
  card.classList.add('failed');
}

async function toggleHeatmap(card, r, toggle) {
  const img = $('.heatmap', card);
  const on = toggle.getAttribute('aria-pressed') !== 'true';
  if (on && !img.src) {
    toggle.disabled = true;
    try {
      const url = await heatmapUrl(token, r.heatmap);
      blobUrls.push(url);
      img.alt = `Heat map of the regions that drove the prediction for ${$('.name', card).textContent}`;
      await new Promise((resolve, reject) => {
        img.onload = resolve;
        img.onerror = () => reject(new Error('the heat map image could not be shown'));
        img.src = url;
      });
    } catch (err) {
      if (!handleAuth(err)) $('.prob', card).textContent += ` Heat map unavailable: ${describe(err)}`;
      return;
    } finally {
      toggle.disabled = false;
    }
  }
  img.hidden = !on;
  $('.preview', card).hidden = on;
  toggle.setAttribute('aria-pressed', String(on));
  toggle.textContent = on ? 'Show original' : 'Show heat map';
}

async function analyse(file, card) {
  if (!TYPES.has(file.type)) {
    showError(card, new ApiError(415, file.type || 'unknown type'));
    return;
  }
  try {
    const r = await predict(token, file);
    names.set(r.sha256, file.name);
    showResult(card, r);
  } catch (err) {
    if (!handleAuth(err)) showError(card, err);
  }
}

async function analyseAll(files) {
  const queue = [...files].map((f) => [f, addCard(f)]);
  const worker = async () => {
    while (queue.length && token) {
      const [file, card] = queue.shift();
      await analyse(file, card);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  if (token) refreshHistory();
}

function clearResults() {
  blobUrls.forEach((u) => URL.revokeObjectURL(u));
  blobUrls = [];
  $('#results').replaceChildren();
  $('#results-empty').hidden = false;
  $('#clear').hidden = true;
  $('#files').focus();
}

// ---- history ----

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function renderHistory(items) {
  const body = $('#history tbody');
  body.replaceChildren();
  for (const r of items) {
    const row = body.insertRow();
    const time = r.time ? r.time.replace('T', ' ').replace(/\.\d+/, '').replace('Z', '') : '';
    cell(row, time);
    const sha = r.sha256 || r.id || '';
    const name = names.get(sha) || (r.source && r.source !== 'upload' ? r.source.split('/').pop() : '');
    cell(row, name || `${sha.slice(0, 12)}…`, name ? '' : 'mono').title = sha;
    cell(row, pct(r.probability), 'num');
    cell(row, verdict(r).text, `tag ${verdict(r).cls}`);
    cell(row, r.model || r.model_id || '');
  }
  $('#history-status').textContent = items.length
    ? `${items.length} most recent, updated ${new Date().toLocaleTimeString()}.`
    : 'No predictions yet.';
}

async function refreshHistory() {
  if (!token) return;
  try {
    renderHistory(await history(token));
  } catch (err) {
    if (!handleAuth(err)) $('#history-status').textContent = `History unavailable: ${describe(err)}`;
  }
}

// ---- wiring ----

function init() {
  $('#signin-form').addEventListener('submit', signIn);
  $('#signout').addEventListener('click', () => { clearResults(); showSignIn(); });
  $('#refresh').addEventListener('click', refreshHistory);
  $('#clear').addEventListener('click', clearResults);
  const input = $('#files');
  input.addEventListener('change', () => {
    if (input.files.length) analyseAll(input.files);
    input.value = '';
  });
  // A file dropped beside the zone must not replace the page.
  for (const ev of ['dragover', 'drop']) window.addEventListener(ev, (e) => e.preventDefault());
  const drop = $('#drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files.length) analyseAll(e.dataTransfer.files);
  });
  if (token) {
    showWorkspace();
    refreshHistory();
  } else {
    showSignIn();
  }
}

init();
