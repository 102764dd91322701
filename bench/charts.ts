/**
 * The bench's charts, as self-contained SVG (no script, no external font or style): what people would rather
 * look at than read, written beside the Markdown table by `bench --matrix … --out`.
 */

/** One line of the latency chart: its label and its quantiles (`p0` … `p100`, ms). */
export interface LatencySeries {
  label: string;
  quantiles: Record<string, number>;
}

/** One worker count of the scaling chart (medians). */
export interface ScalingPoint {
  workers: number;
  msgsPerS: number;
  /** CPU ms per message by process kind, stacked in this order. */
  cpuMs: Record<string, number>;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
const FONT = 'font-family="Helvetica, Arial, sans-serif"';

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (n: number) => (n >= 100 ? String(Math.round(n)) : n >= 10 ? n.toFixed(1).replace(/\.0$/, '') : n.toFixed(2).replace(/0$/, '').replace(/\.0$/, ''));

/** Round numbers from 1 upward (1, 2, 5, 10, 20, 50 …) covering [lo, hi], for a log axis. */
function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(Math.max(lo, 0.1))); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo && v <= hi) ticks.push(v);
    }
  }
  return ticks;
}

/** About five round numbers from 0 up to the first at or above `hi`, for a linear axis. */
function linearTicks(hi: number): number[] {
  const raw = hi / 5;
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  // Up to the first tick at or above `hi`, so the axis covers every value.
  for (let v = 0; out.length === 0 || out.at(-1)! < hi; v += step) out.push(Number(v.toFixed(6)));
  return out;
}

/**
 * The distribution of accept → delivered latency: the share of messages (y, %) delivered within x ms (log
 * scale), one line per series. A line further left is faster; its last stretch is the tail.
 * @example writeFileSync('latency.svg', latencyChart([{ label: '1 worker, half load', quantiles: r.latency_quantiles_ms }]));
 */
export function latencyChart(series: LatencySeries[], title = 'Accept → delivered webhook'): string {
  const W = 720, H = 420, L = 64, R = 200, T = 44, B = 52;
  const pw = W - L - R, ph = H - T - B;
  const points = series.map((s) => Object.entries(s.quantiles)
    .map(([k, v]) => [Number(k.slice(1)), Math.max(v, 0.5)] as const)
    .filter(([q]) => Number.isFinite(q))
    .sort((a, b) => a[0] - b[0]));
  const all = points.flat().map(([, v]) => v);
  const lo = Math.max(0.5, Math.min(...all, 1));
  const hi = Math.max(...all, 10) * 1.1;
  const x = (v: number) => L + ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * pw;
  const y = (q: number) => T + ph - (q / 100) * ph;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT} font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${L}" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  for (const t of logTicks(lo, hi)) {
    out.push(`<line x1="${x(t).toFixed(1)}" y1="${T}" x2="${x(t).toFixed(1)}" y2="${T + ph}" stroke="#e5e5e5"/>`,
      `<text x="${x(t).toFixed(1)}" y="${T + ph + 16}" text-anchor="middle" fill="#444">${fmt(t)}</text>`);
  }
  for (const q of [0, 25, 50, 75, 90, 100]) {
    out.push(`<line x1="${L}" y1="${y(q).toFixed(1)}" x2="${L + pw}" y2="${y(q).toFixed(1)}" stroke="#e5e5e5"/>`,
      `<text x="${L - 6}" y="${(y(q) + 4).toFixed(1)}" text-anchor="end" fill="#444">${q}%</text>`);
  }
  out.push(`<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`,
    `<text x="${L + pw / 2}" y="${H - 12}" text-anchor="middle">milliseconds (log scale)</text>`,
    `<text transform="translate(16 ${T + ph / 2}) rotate(-90)" text-anchor="middle">messages delivered within</text>`);
  points.forEach((pts, i) => {
    const color = COLORS[i % COLORS.length]!;
    const d = pts.map(([q, v], j) => `${j ? 'L' : 'M'}${x(v).toFixed(1)},${y(q).toFixed(1)}`).join(' ');
    const p50 = series[i]!.quantiles.p50 ?? 0;
    const p99 = series[i]!.quantiles.p99 ?? 0;
    out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`,
      `<line x1="${L + pw + 14}" y1="${T + 10 + i * 36}" x2="${L + pw + 34}" y2="${T + 10 + i * 36}" stroke="${color}" stroke-width="3"/>`,
      `<text x="${L + pw + 40}" y="${T + 14 + i * 36}">${esc(series[i]!.label)}</text>`,
      `<text x="${L + pw + 40}" y="${T + 28 + i * 36}" fill="#555">p50 ${fmt(p50)} ms, p99 ${fmt(p99)} ms</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

/**
 * Throughput (left, bars) and CPU per message by process (right, stacked bars) against the number of worker
 * processes: where adding workers helps and what each message costs.
 * @example writeFileSync('scaling.svg', scalingChart([{ workers: 1, msgsPerS: 500, cpuMs: { workers: 1.7, redis: 0.5 } }]));
 */
export function scalingChart(points: ScalingPoint[], title = 'Throughput and CPU per message by worker processes'): string {
  const W = 900, H = 400, T = 60, B = 56, panel = 300, gap = 90, L = 64;
  const ph = H - T - B;
  const kinds = [...new Set(points.flatMap((p) => Object.keys(p.cpuMs)))];
  const maxRate = Math.max(...points.map((p) => p.msgsPerS), 1);
  const maxCpu = Math.max(...points.map((p) => Object.values(p.cpuMs).reduce((a, b) => a + b, 0)), 0.1);
  const rateTicks = linearTicks(maxRate * 1.1);
  const cpuTicks = linearTicks(maxCpu * 1.1);
  const rateTop = rateTicks.at(-1)!;
  const cpuTop = cpuTicks.at(-1)!;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT} font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${L}" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  const axis = (x0: number, ticks: number[], top: number, label: string) => {
    for (const t of ticks) {
      const yy = T + ph - (t / top) * ph;
      out.push(`<line x1="${x0}" y1="${yy.toFixed(1)}" x2="${x0 + panel}" y2="${yy.toFixed(1)}" stroke="#e5e5e5"/>`,
        `<text x="${x0 - 6}" y="${(yy + 4).toFixed(1)}" text-anchor="end" fill="#444">${fmt(t)}</text>`);
    }
    out.push(`<rect x="${x0}" y="${T}" width="${panel}" height="${ph}" fill="none" stroke="#999"/>`,
      `<text x="${x0 + panel / 2}" y="${T - 10}" text-anchor="middle" font-weight="bold">${esc(label)}</text>`,
      `<text x="${x0 + panel / 2}" y="${H - 14}" text-anchor="middle">worker processes</text>`);
  };
  const slot = panel / points.length;
  const bw = Math.min(48, slot * 0.6);
  // Left: messages per second.
  axis(L, rateTicks, rateTop, 'messages per second');
  points.forEach((p, i) => {
    const cx = L + slot * (i + 0.5);
    const h = (p.msgsPerS / rateTop) * ph;
    out.push(`<rect x="${(cx - bw / 2).toFixed(1)}" y="${(T + ph - h).toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[0]}"/>`,
      `<text x="${cx.toFixed(1)}" y="${(T + ph - h - 4).toFixed(1)}" text-anchor="middle">${Math.round(p.msgsPerS)}</text>`,
      `<text x="${cx.toFixed(1)}" y="${T + ph + 16}" text-anchor="middle" fill="#444">${p.workers}</text>`);
  });
  // Right: CPU ms per message, stacked by process.
  const x1 = L + panel + gap;
  axis(x1, cpuTicks, cpuTop, 'CPU ms per message');
  points.forEach((p, i) => {
    const cx = x1 + slot * (i + 0.5);
    let base = 0;
    kinds.forEach((k, j) => {
      const v = p.cpuMs[k] ?? 0;
      const y0 = T + ph - ((base + v) / cpuTop) * ph;
      out.push(`<rect x="${(cx - bw / 2).toFixed(1)}" y="${y0.toFixed(1)}" width="${bw.toFixed(1)}" height="${((v / cpuTop) * ph).toFixed(1)}" fill="${COLORS[(j + 1) % COLORS.length]}"/>`);
      base += v;
    });
    out.push(`<text x="${cx.toFixed(1)}" y="${(T + ph - (base / cpuTop) * ph - 4).toFixed(1)}" text-anchor="middle">${fmt(base)}</text>`,
      `<text x="${cx.toFixed(1)}" y="${T + ph + 16}" text-anchor="middle" fill="#444">${p.workers}</text>`);
  });
  kinds.forEach((k, j) => {
    out.push(`<rect x="${x1 + panel + 10}" y="${T + 4 + j * 18}" width="12" height="12" fill="${COLORS[(j + 1) % COLORS.length]}"/>`,
      `<text x="${x1 + panel + 27}" y="${T + 14 + j * 18}">${esc(k)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
