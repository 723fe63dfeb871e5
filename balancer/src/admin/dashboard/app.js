// The dashboard: reads the balancer's server-sent events and draws them. No framework, no
// third-party code: this file, the page and the stylesheet are all the balancer serves.
'use strict';

const HISTORY_MS = 5 * 60 * 1000;
const MAX_POINTS = 300;
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2',
  '#db2777', '#65a30d', '#475569', '#ea580c'];

const points = []; // {t, rps: {address: value}}, oldest first
const colors = new Map(); // address -> color, stable while the page lives
const rows = new Map(); // address -> the row's cells
let source = null;
let failures = 0;

function colorOf(address) {
  if (!colors.has(address)) colors.set(address, COLORS[colors.size % COLORS.length]);
  return colors.get(address);
}

function setStatus(name, text) {
  const status = document.getElementById('status');
  status.className = 'status ' + name;
  status.dataset.status = name;
  status.textContent = text;
}

function connect() {
  source = new EventSource('/events');
  source.addEventListener('open', () => setStatus('live', 'live'));
  source.addEventListener('history', (event) => {
    const history = JSON.parse(event.data);
    points.length = 0;
    for (const point of history.points) points.push(point);
    drawChart();
  });
  source.addEventListener('snapshot', (event) => {
    failures = 0;
    apply(JSON.parse(event.data));
  });
  source.addEventListener('error', () => {
    if (source.readyState !== EventSource.CLOSED) {
      setStatus('reconnecting', 'reconnecting…');
      return;
    }
    // Refused (no session any more, too many dashboards, server gone): try again a few
    // times, then reload, which shows the login form if the session is what ended.
    source.close();
    failures += 1;
    setStatus('disconnected', 'disconnected');
    if (failures >= 5) {
      location.reload();
    } else {
      setTimeout(connect, 3000);
    }
  });
}

function formatNumber(value, digits) {
  if (value === null || value === undefined) return '–';
  return Number(value).toLocaleString('en-US', {
    minimumFractionDigits: digits, maximumFractionDigits: digits,
  });
}

function formatLatency(value) {
  if (value === null || value === undefined) return '–';
  if (value === '+Inf') return '> 5 s';
  return value >= 1000 ? '≤ ' + value / 1000 + ' s' : '≤ ' + value + ' ms';
}

function cell(tr, className) {
  const td = document.createElement('td');
  td.className = className;
  tr.appendChild(td);
  return td;
}

function makeRow(address) {
  const tr = document.createElement('tr');
  tr.dataset.backend = address;
  const name = cell(tr, 'backend');
  const swatch = document.createElement('span');
  swatch.className = 'swatch';
  swatch.style.background = colorOf(address);
  const label = document.createElement('span');
  label.className = 'address';
  const origin = document.createElement('span');
  origin.className = 'origin';
  name.append(swatch, label, origin);
  const state = cell(tr, 'state');
  const badge = document.createElement('span');
  badge.className = 'badge';
  const reason = document.createElement('span');
  reason.className = 'reason';
  state.append(badge, reason);
  const shareCell = cell(tr, 'share');
  const bar = document.createElement('div');
  bar.className = 'bar';
  const fill = document.createElement('div');
  fill.className = 'fill';
  fill.style.background = colorOf(address);
  const shareText = document.createElement('span');
  shareText.className = 'share-text';
  bar.appendChild(fill);
  shareCell.append(bar, shareText);
  const cells = {
    tr, label, origin, badge, reason, fill, shareText,
    weight: cell(tr, 'num weight'),
    inFlight: cell(tr, 'num in-flight'),
    rps: cell(tr, 'num rps'),
    errors: cell(tr, 'num errors'),
    p50: cell(tr, 'num p50'),
    p99: cell(tr, 'num p99'),
    mean: cell(tr, 'num mean'),
    pinned: cell(tr, 'num pinned'),
    stickyRps: cell(tr, 'num sticky-rps'),
  };
  // The share column sits after the latency ones.
  tr.insertBefore(shareCell, cells.pinned);
  return cells;
}

function apply(snapshot) {
  document.getElementById('total-rps').textContent = formatNumber(snapshot.total_rps, 1);
  document.getElementById('backend-count').textContent = snapshot.backends.length;
  document.getElementById('generation').textContent = snapshot.generation;
  const body = document.getElementById('backends');
  const seen = new Set();
  for (const backend of snapshot.backends) {
    seen.add(backend.address);
    let row = rows.get(backend.address);
    if (!row) {
      row = makeRow(backend.address);
      rows.set(backend.address, row);
    }
    body.appendChild(row.tr); // in the set's order
    row.tr.dataset.state = backend.state;
    row.tr.dataset.rps = backend.rps;
    row.tr.dataset.requests = backend.requests;
    row.label.textContent = backend.address;
    row.origin.textContent = backend.origin !== backend.address ? backend.origin : '';
    row.badge.textContent = backend.state;
    row.badge.className = 'badge ' + backend.state;
    row.reason.textContent = backend.reason || '';
    row.weight.textContent = backend.weight;
    row.inFlight.textContent = backend.in_flight;
    row.rps.textContent = formatNumber(backend.rps, 1);
    row.errors.textContent = backend.error_rate === null
      ? '–' : formatNumber(backend.error_rate * 100, 1) + ' %';
    row.errors.classList.toggle('bad', backend.error_rate > 0);
    row.p50.textContent = formatLatency(backend.p50_ms);
    row.p99.textContent = formatLatency(backend.p99_ms);
    row.mean.textContent = backend.mean_ms === null ? '–' : formatNumber(backend.mean_ms, 1) + ' ms';
    row.fill.style.width = (backend.share * 100).toFixed(1) + '%';
    row.shareText.textContent = formatNumber(backend.share * 100, 0) + ' %';
    row.pinned.textContent = formatNumber(backend.sticky_issued, 0)
      + (backend.sticky_issued_ps > 0 ? ' (+' + formatNumber(backend.sticky_issued_ps, 1) + '/s)' : '');
    row.stickyRps.textContent = formatNumber(backend.sticky_routed_ps, 1);
  }
  for (const [address, row] of rows) {
    if (!seen.has(address)) {
      row.tr.remove();
      rows.delete(address);
    }
  }
  const empty = body.querySelector('tr.empty');
  if (empty && snapshot.backends.length > 0) empty.remove();

  const last = points[points.length - 1];
  if (!last || snapshot.t > last.t) {
    const rps = {};
    for (const backend of snapshot.backends) rps[backend.address] = backend.rps;
    points.push({ t: snapshot.t, rps });
    while (points.length > MAX_POINTS) points.shift();
  }
  drawChart();
}

// A "nice" axis maximum: 1, 2 or 5 times a power of ten.
function niceMax(value) {
  if (value <= 0) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function drawChart() {
  const canvas = document.getElementById('chart');
  canvas.dataset.points = points.length;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const context = canvas.getContext('2d');
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);

  const left = 56, right = 12, top = 10, bottom = 24;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const end = points.length ? points[points.length - 1].t : Date.now();
  // The axis spans what there is (at least 30 s, at most the 5 minutes kept), so a young
  // history is not squeezed into the right edge.
  const span = points.length ? end - points[0].t : 0;
  const step = [5, 10, 15, 30, 60].map((s) => s * 1000).find((s) => span <= 6 * s) || 60000;
  const windowMs = Math.min(HISTORY_MS, Math.max(30000, Math.ceil(span / step) * step));
  const start = end - windowMs;
  const addresses = new Set();
  let highest = 0;
  for (const point of points) {
    for (const [address, value] of Object.entries(point.rps)) {
      addresses.add(address);
      highest = Math.max(highest, value);
    }
  }
  const max = niceMax(highest);
  const x = (t) => left + ((t - start) / windowMs) * plotWidth;
  const y = (v) => top + plotHeight - (v / max) * plotHeight;

  context.font = '11px system-ui, sans-serif';
  context.fillStyle = '#64748b';
  context.strokeStyle = '#e2e8f0';
  context.lineWidth = 1;
  context.textAlign = 'right';
  context.textBaseline = 'middle';
  for (let i = 0; i <= 4; i++) {
    const value = (max / 4) * i;
    const py = Math.round(y(value)) + 0.5;
    context.beginPath();
    context.moveTo(left, py);
    context.lineTo(left + plotWidth, py);
    context.stroke();
    context.fillText(formatNumber(value, value < 10 && value % 1 ? 1 : 0), left - 6, py);
  }
  context.textAlign = 'center';
  context.textBaseline = 'top';
  const tickStep = windowMs <= 60000 ? step : 60000;
  for (let ago = 0; ago <= windowMs; ago += tickStep) {
    let label = 'now';
    if (ago > 0) label = ago % 60000 === 0 ? '-' + ago / 60000 + ' min' : '-' + ago / 1000 + ' s';
    context.fillText(label, x(end - ago), top + plotHeight + 6);
  }

  context.lineWidth = 2;
  context.lineJoin = 'round';
  for (const address of addresses) {
    context.strokeStyle = colorOf(address);
    context.beginPath();
    let drawing = false;
    for (const point of points) {
      const value = point.rps[address];
      if (value === undefined) {
        drawing = false; // not in the set at that time: a gap, not a zero
        continue;
      }
      if (drawing) {
        context.lineTo(x(point.t), y(value));
      } else {
        context.moveTo(x(point.t), y(value));
        drawing = true;
      }
    }
    context.stroke();
  }

  const legend = document.getElementById('legend');
  const entries = [...addresses].map((address) => {
    const item = document.createElement('span');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = colorOf(address);
    item.append(swatch, document.createTextNode(address));
    return item;
  });
  legend.replaceChildren(...entries);
}

// Scaling decisions: asked for every few seconds, only those newer than the last seen.
const MAX_SCALING_ROWS = 100;
let scalingAfter = 0;

function formatFigure(value) {
  return Math.abs(value) >= 100 ? formatNumber(value, 0) : formatNumber(value, 2);
}

function addScalingEvent(event) {
  const body = document.getElementById('scaling-events');
  const empty = body.querySelector('tr.empty');
  if (empty) empty.remove();
  const tr = document.createElement('tr');
  tr.dataset.seq = event.seq;
  tr.dataset.direction = event.direction;
  tr.dataset.current = event.current;
  tr.dataset.desired = event.desired;
  const time = cell(tr, 'time');
  time.textContent = new Date(event.at_ms).toLocaleTimeString('en-GB');
  const change = cell(tr, 'change');
  const badge = document.createElement('span');
  badge.className = 'badge ' + (event.direction === 'up' ? 'healthy'
    : event.direction === 'down' ? 'draining' : 'drained');
  badge.textContent = event.direction;
  change.append(badge, document.createTextNode(' ' + event.current + ' → ' + event.desired));
  const figures = cell(tr, 'figures');
  figures.textContent = Object.entries(event.figures || {})
    .map(([name, value]) => name + ' ' + formatFigure(value)).join(', ');
  cell(tr, 'why').textContent = event.reason || '';
  body.prepend(tr);
  while (body.children.length > MAX_SCALING_ROWS) body.lastElementChild.remove();
  body.dataset.count = Number(body.dataset.count) + 1;
}

async function pollScaling() {
  try {
    const response = await fetch('/dashboard/scaling-events?after=' + scalingAfter,
      { credentials: 'same-origin', cache: 'no-store' });
    if (response.ok) {
      const list = await response.json();
      for (const event of list.events) {
        addScalingEvent(event);
        scalingAfter = Math.max(scalingAfter, event.seq);
      }
    }
  } catch (error) {
    // The event stream's status already tells the viewer the balancer is away.
  }
  setTimeout(pollScaling, 2000);
}

connect();
pollScaling();
window.addEventListener('resize', drawChart);
