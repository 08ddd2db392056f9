// vmlab dashboard: charts of one run, fed by server-sent events from /events
// (a `snapshot` of the history, then an `update` about once a second).
// Plain script, no build step; charts by uPlot (assets/vendor/uplot).
// The body's data-* attributes (status, rows, updates, vms) and each chart's
// data-points say what the page has drawn, for tests and for curious people.
'use strict';

const MAX_POINTS = 3600; // per chart: an hour at 1 s
const COLORS = ['#2364d2', '#d12771', '#198038', '#b28600', '#8a3ffc', '#007d79', '#fa4d56', '#6f6f6f'];
const KIND_COLORS = { pin: '#8a3ffc', memory: '#d12771', vcpus: '#0f62fe' };
const KINDS = Object.keys(KIND_COLORS);

const allocated = (r) => r.balloon_actual_mib;
const share = (pct, of) => (pct == null || of == null ? null : (pct * of) / 100);

// Charts of each VM: series are functions of a row (and the VM's previous row).
const VM_CHARTS = [
  {
    key: 'memory', title: 'Memory', unit: 'MiB', series: [
      { label: 'used', color: '#d12771', width: 2, value: (r) => r.mem_used_mib },
      { label: 'allocated (balloon)', color: '#2364d2', width: 2, value: allocated },
      { label: 'guest total', color: '#7a8599', dash: [2, 3], value: (r) => r.mem_total_mib },
      { label: 'floor', color: '#198038', dash: [6, 4], value: (r) => r.mem_floor_mib },
      { label: 'high', color: '#b28600', dash: [3, 3], value: (r) => share(r.mem_high_pct, allocated(r)) },
      { label: 'low', color: '#007d79', dash: [3, 3], value: (r) => share(r.mem_low_pct, allocated(r)) },
    ],
  },
  {
    key: 'cpu', title: 'CPU', unit: '%', range: [0, 100], series: [
      { label: 'guest CPU', color: '#2364d2', width: 2, value: (r) => r.cpu_pct },
    ],
  },
  {
    key: 'disk', title: 'Disk', unit: 'KiB/s', series: [
      { label: 'read', color: '#198038', value: (r) => r.disk_read_kib_s },
      { label: 'write', color: '#d12771', value: (r) => r.disk_write_kib_s },
    ],
  },
  {
    key: 'net', title: 'Network', unit: 'KiB/s', series: [
      { label: 'rx', color: '#198038', value: (r, p) => rate(r, p, 'net_rx_bytes') },
      { label: 'tx', color: '#d12771', value: (r, p) => rate(r, p, 'net_tx_bytes') },
    ],
  },
];

// Counters to KiB/s between two rows of a VM; a reset (reboot) is a gap.
function rate(row, prev, key) {
  if (!prev || row[key] == null || prev[key] == null || row.t_s <= prev.t_s) return null;
  const delta = row[key] - prev[key];
  return delta < 0 ? null : delta / 1024 / (row.t_s - prev.t_s);
}

let vms = new Map(); // name -> { card, charts: {key: {plot, data}}, last, facts }
let pcpu = null; // { plot, data, count }
let timeline = null;
let decisions = [];
let rows = 0;
let updates = 0;

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function plot(container, series, opts) {
  const width = Math.max(container.clientWidth, 200);
  // Only options that are set: uPlot takes an explicit `undefined` as a value.
  const yAxis = { size: 48 };
  if (opts.yValues) yAxis.values = opts.yValues;
  if (opts.ySplits) yAxis.splits = opts.ySplits;
  return new uPlot({
    width, height: opts.height || 160,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: opts.range ? { range: opts.range } : {} },
    axes: [{ size: 30 }, yAxis],
    series: [{}, ...series.map((s) => {
      const line = { label: s.label, stroke: s.color, width: s.width || 1.5, spanGaps: false, points: { show: false } };
      if (s.dash) line.dash = s.dash;
      if (s.pointsOnly) Object.assign(line, { paths: () => null, points: { show: true, size: 8, fill: s.color } });
      return line;
    })],
  }, [[], ...series.map(() => [])], container);
}

// Appends a point to a chart's columns, keeping at most MAX_POINTS.
function push(data, t, values) {
  data[0].push(t);
  values.forEach((v, i) => data[i + 1].push(v == null ? null : v));
  if (data[0].length > MAX_POINTS) data.forEach((col) => col.shift());
}

function points(data) {
  return data[1].filter((v) => v != null).length;
}

function vm(name) {
  if (vms.has(name)) return vms.get(name);
  const facts = h('span', { class: 'vm-facts' });
  const grid = h('div', { class: 'vm-charts' });
  const card = h('div', { class: 'card vm', 'data-vm': name }, h('h2', {}, name, facts), grid);
  const section = document.getElementById('vms');
  const after = [...section.children].find((c) => c.dataset.vm > name);
  section.insertBefore(card, after || null);
  const charts = {};
  for (const def of VM_CHARTS) {
    const box = h('div', { class: 'chart', 'data-chart': `${name}:${def.key}`, 'data-points': '0' });
    grid.append(h('div', {}, h('h3', {}, `${def.title} (${def.unit})`), box));
    charts[def.key] = { box, plot: plot(box, def.series, def), data: [[], ...def.series.map(() => [])] };
  }
  const entry = { card, charts, facts, last: null, balloon: false };
  vms.set(name, entry);
  document.body.dataset.vms = vms.size;
  return entry;
}

function addRow(row) {
  const t = Date.parse(row.time) / 1000;
  const entry = vm(row.vm);
  for (const def of VM_CHARTS) {
    push(entry.charts[def.key].data, t, def.series.map((s) => s.value(row, entry.last)));
  }
  entry.balloon = entry.balloon || row.balloon_actual_mib != null;
  entry.last = row;
  if (!pcpu || row.pcpu_pct.length !== pcpu.count) makePcpuChart(row.pcpu_pct.length);
  const columns = pcpu.data[0];
  if (columns[columns.length - 1] !== t) push(pcpu.data, t, row.pcpu_pct);
  rows += 1;
}

function makePcpuChart(count) {
  const box = document.getElementById('pcpu');
  box.replaceChildren();
  const series = [...Array(count).keys()].map((i) => ({ label: `pCPU ${i}`, color: COLORS[i % COLORS.length], width: 2 }));
  pcpu = { count, box, plot: plot(box, series, { range: [0, 100], height: 180 }), data: [[], ...series.map(() => [])] };
}

function makeTimeline() {
  const box = document.getElementById('timeline');
  box.replaceChildren();
  const names = () => [...vms.keys()];
  const series = KINDS.map((k) => ({ label: k, color: KIND_COLORS[k], pointsOnly: true }));
  timeline = {
    box,
    plot: plot(box, series, {
      height: 120,
      range: () => [-0.5, Math.max(names().length, 1) - 0.5],
      ySplits: () => names().map((_, i) => i),
      yValues: (u, splits) => splits.map((i) => names()[i] || ''),
    }),
  };
}

function drawDecisions() {
  const names = [...vms.keys()];
  const data = [[], ...KINDS.map(() => [])];
  for (const d of decisions) {
    data[0].push(Date.parse(d.time) / 1000);
    KINDS.forEach((k, i) => data[i + 1].push(d.kind === k ? Math.max(names.indexOf(d.vm), 0) : null));
  }
  timeline.plot.setData(data);
  timeline.box.dataset.points = decisions.length;
  const body = document.querySelector('#decisions tbody');
  body.replaceChildren(...decisions.slice(-6).reverse().map((d) => h('tr', { title: d.inputs },
    h('td', {}, new Date(d.time).toLocaleTimeString()),
    h('td', {}, d.vm),
    h('td', { class: `kind-${d.kind}` }, d.kind),
    h('td', {}, `${d.before} → ${d.after} ${d.unit}`),
    h('td', {}, d.reason))));
}

// The latest pins of every VM, grouped by pCPU: `0:1;1:0-1` is vCPU 0 on pCPU 1, vCPU 1 on 0-1.
function drawPins() {
  const byPcpu = new Map();
  const add = (where, chip) => byPcpu.set(where, [...(byPcpu.get(where) || []), chip]);
  for (const [name, entry] of vms) {
    const row = entry.last;
    if (!row) continue;
    const pairs = row.pins ? row.pins.split(';') : [];
    if (!pairs.length) add('unpinned', `${name} ×${row.vcpus ?? '?'}`);
    for (const pair of pairs) {
      const [vcpu, set] = pair.split(':');
      add(/^\d+$/.test(set) ? `pCPU ${set}` : `pCPUs ${set}`, `${name}/v${vcpu}`);
    }
  }
  const last = pcpu ? pcpu.data.map((col) => col[col.length - 1]) : [];
  const keys = [...Array(pcpu ? pcpu.count : 0).keys()].map((i) => `pCPU ${i}`);
  for (const k of byPcpu.keys()) if (!keys.includes(k)) keys.push(k);
  const table = h('table', {}, ...keys.map((k) => {
    const i = k.startsWith('pCPU ') ? Number(k.slice(5)) : NaN;
    const load = Number.isInteger(i) && last[i + 1] != null ? ` ${Math.round(last[i + 1])}%` : '';
    return h('tr', {}, h('th', {}, k + load), h('td', {}, ...(byPcpu.get(k) || []).map((c) => h('span', { class: 'chip' }, c))));
  }));
  document.getElementById('pins').replaceChildren(table);
}

function draw() {
  for (const [, entry] of vms) {
    for (const key of Object.keys(entry.charts)) {
      const chart = entry.charts[key];
      chart.plot.setData(chart.data);
      chart.box.dataset.points = points(chart.data);
    }
    const r = entry.last;
    entry.facts.textContent = `${r.vcpus ?? '?'} vCPU · pins ${r.pins || 'none'}` +
      (entry.balloon ? '' : ' · no balloon stats');
  }
  if (pcpu) {
    pcpu.plot.setData(pcpu.data);
    pcpu.box.dataset.points = points(pcpu.data);
  }
  drawDecisions();
  drawPins();
  document.body.dataset.rows = rows;
  document.body.dataset.updates = updates;
}

function ingest(msg) {
  msg.rows.forEach(addRow);
  decisions = decisions.concat(msg.decisions).slice(-MAX_POINTS);
  const status = msg.finished ? 'finished' : msg.mode;
  document.body.dataset.status = status;
  document.getElementById('status').textContent = msg.finished ? 'replay finished' : msg.mode;
  document.getElementById('run').textContent = msg.run;
  const last = [...vms.values()].map((e) => e.last && e.last.time).sort().pop();
  document.getElementById('clock').textContent = last ? `last sample ${new Date(last).toLocaleString()}` : 'no samples yet';
  const error = document.getElementById('error');
  error.hidden = !msg.error;
  error.textContent = msg.error || '';
  draw();
}

function reset() {
  vms = new Map();
  decisions = [];
  rows = 0;
  pcpu = null;
  document.getElementById('vms').replaceChildren();
  document.getElementById('pcpu').replaceChildren();
  makeTimeline();
}

const events = new EventSource('/events');
events.addEventListener('snapshot', (e) => { reset(); ingest(JSON.parse(e.data)); });
events.addEventListener('update', (e) => { updates += 1; ingest(JSON.parse(e.data)); });
events.onerror = () => {
  document.body.dataset.status = 'disconnected';
  document.getElementById('status').textContent = 'disconnected, retrying';
};

window.addEventListener('resize', () => {
  const charts = [timeline, pcpu, ...[...vms.values()].flatMap((e) => Object.values(e.charts))];
  for (const c of charts.filter(Boolean)) c.plot.setSize({ width: Math.max(c.box.clientWidth, 200), height: c.plot.height });
});
