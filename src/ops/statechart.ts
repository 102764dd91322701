import type { AnyStateMachine, AnyStateNode } from 'xstate';

/** One transition of the chart: from a state to a state (the same one when it only runs actions). */
export interface ChartTransition {
  source: string;
  target: string | null;
  event: string;
  guard?: string;
}

/** A state of the chart, with its children when it is compound. */
export interface ChartState {
  id: string;
  key: string;
  final: boolean;
  initial: boolean;
  children: ChartState[];
}

/** The statechart of a machine, read from its definition (so it follows every change to the machine). */
export interface Chart {
  root: ChartState;
  transitions: ChartTransition[];
}

const guardName = (g: unknown): string | undefined => {
  if (!g) return undefined;
  if (typeof g === 'string') return g;
  const t = (g as { type?: unknown }).type;
  if (typeof t === 'string') return t;
  const params = (g as { params?: { guards?: unknown[] } }).params?.guards;
  if (Array.isArray(params)) return params.map(guardName).join(' & ');
  return 'guard';
};

/** The machine's states and transitions, from `machine.root`. */
export function chartOf(machine: AnyStateMachine): Chart {
  const transitions: ChartTransition[] = [];
  const walk = (node: AnyStateNode, parent: AnyStateNode | undefined): ChartState => {
    for (const [event, list] of node.transitions) {
      for (const t of list) {
        const targets = (t.target ?? []) as AnyStateNode[];
        const g = guardName(t.guard);
        if (!targets.length) transitions.push({ source: node.id, target: null, event, ...(g ? { guard: g } : {}) });
        for (const target of targets) transitions.push({ source: node.id, target: target.id, event, ...(g ? { guard: g } : {}) });
      }
    }
    const children = Object.values(node.states ?? {}).map((c) => walk(c as AnyStateNode, node));
    return {
      id: node.id, key: node.key, final: node.type === 'final', children,
      initial: parent !== undefined && (parent.initial?.target ?? []).some((t: AnyStateNode) => t.id === node.id),
    };
  };
  return { root: walk(machine.root, undefined), transitions };
}

/** Every state id of the chart (depth first). */
export function stateIds(chart: Chart): string[] {
  const out: string[] = [];
  const walk = (s: ChartState) => {
    out.push(s.id);
    s.children.forEach(walk);
  };
  walk(chart.root);
  return out;
}

/** The ids of the states a state value names as active (`'a'`, `{ a: 'b' }`, ...), under the root id. */
export function activeIds(rootId: string, value: unknown): string[] {
  const out: string[] = [];
  const walk = (prefix: string, v: unknown) => {
    if (typeof v === 'string') out.push(`${prefix}.${v}`);
    else if (v && typeof v === 'object') {
      for (const [k, sub] of Object.entries(v)) {
        out.push(`${prefix}.${k}`);
        walk(`${prefix}.${k}`, sub);
      }
    }
  };
  walk(rootId, value);
  return out;
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

interface Box { x: number; y: number; w: number; h: number }

/**
 * Draws the chart as SVG. The children of a state sit in one row, ordered breadth first from its initial
 * state over the transitions (finals last); a transition forward along the row is an arc above the boxes,
 * one backward an arc below, each labelled with its events; transitions that stay in a state are listed in
 * its box (for the root: "in any state"). The active states carry `class="state active"` and
 * `data-active="true"`.
 */
export function renderChart(chart: Chart, active: string[]): string {
  const isActive = new Set(active);
  const boxes = new Map<string, Box>();
  const order = new Map<string, number>();
  const selfEvents = new Map<string, string[]>();
  for (const t of chart.transitions) {
    if (t.target === null || t.target === t.source) {
      const list = selfEvents.get(t.source) ?? [];
      if (!list.includes(t.event)) list.push(t.event);
      selfEvents.set(t.source, list);
    }
  }
  const LINE = 15;
  const W = 200;
  const GAP_X = 70;
  // How far an arc rises (or sinks): past its own labels, and past every shorter arc's.
  const liftOf = (hops: number, events: number) => 22 + 13 * events + (hops - 1) * 75;
  const pairs = new Map<string, { source: string; target: string; events: string[] }>();
  for (const t of chart.transitions) {
    if (!t.target || t.target === t.source) continue;
    const k = `${t.source}\u2192${t.target}`;
    const p = pairs.get(k) ?? { source: t.source, target: t.target, events: [] };
    if (!p.events.includes(t.event)) p.events.push(t.event);
    pairs.set(k, p);
  }
  // The root's own events are many: wrapped into lines across its box instead of one per line.
  const wrap = (events: string[], width: number) => {
    const lines: string[] = [];
    let line = '';
    for (const e of events) {
      const next = line ? `${line} \u00b7 ${e}` : e;
      if (next.length * 6.4 > width && line) {
        lines.push(line);
        line = e;
      } else line = next;
    }
    if (line) lines.push(line);
    return lines;
  };

  const layout = (s: ChartState, x: number, y: number, isRoot: boolean): Box => {
    const own = selfEvents.get(s.id) ?? [];
    if (!s.children.length) {
      const box = { x, y, w: W, h: Math.max(52, 30 + own.length * LINE + 8) };
      boxes.set(s.id, box);
      return box;
    }
    // Row order: breadth first from the initial child, then the rest (finals last).
    const ids = new Set(s.children.map((c) => c.id));
    const start = s.children.find((c) => c.initial) ?? s.children[0]!;
    const seen = [start.id];
    for (let i = 0; i < seen.length; i++) {
      for (const t of chart.transitions) {
        if (t.source === seen[i] && t.target && ids.has(t.target) && !seen.includes(t.target) && !s.children.find((c) => c.id === t.target)!.final) seen.push(t.target);
      }
    }
    const row = [...seen, ...s.children.filter((c) => !seen.includes(c.id) && !c.final).map((c) => c.id), ...s.children.filter((c) => c.final && !seen.includes(c.id)).map((c) => c.id)];
    row.forEach((id, i) => order.set(id, i));
    const hop = (p: { source: string; target: string }) => Math.abs((order.get(p.target) ?? 0) - (order.get(p.source) ?? 0));
    const inside = [...pairs.values()].filter((p) => ids.has(p.source) && ids.has(p.target));
    const labelsAbove = Math.max(0, ...inside.filter((p) => order.get(p.source)! < order.get(p.target)!).map((p) => liftOf(hop(p), p.events.length)));
    const labelsBelow = Math.max(0, ...inside.filter((p) => order.get(p.source)! > order.get(p.target)!).map((p) => liftOf(hop(p), p.events.length)));
    const width = row.length * (W + GAP_X) - GAP_X + 48;
    const headerLines = isRoot ? wrap(own, width - 24).length : own.length;
    const top = y + 30 + headerLines * LINE + 20 + labelsAbove;
    let cx = x + 24;
    let bottom = top;
    for (const id of row) {
      const b = layout(s.children.find((c) => c.id === id)!, cx, top, false);
      cx += b.w + GAP_X;
      bottom = Math.max(bottom, b.y + b.h);
    }
    const box = { x, y, w: Math.max(W, cx - GAP_X + 24 - x), h: bottom - y + 24 + labelsBelow };
    boxes.set(s.id, box);
    return box;
  };
  const rootBox = layout(chart.root, 10, 10, true);

  const parts: string[] = [];
  const drawState = (s: ChartState, depth: number) => {
    const b = boxes.get(s.id)!;
    const on = isActive.has(s.id);
    const cls = ['state', on ? 'active' : '', s.final ? 'final' : '', depth === 0 ? 'root' : ''].filter(Boolean).join(' ');
    parts.push(`<g class="${cls}" data-state="${esc(s.id)}" data-active="${on}">`);
    parts.push(`<rect x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}" rx="${s.final ? 22 : 10}"/>`);
    if (s.final) parts.push(`<rect class="inner" x="${b.x + 4}" y="${b.y + 4}" width="${b.w - 8}" height="${b.h - 8}" rx="18"/>`);
    parts.push(`<text class="name" x="${b.x + 12}" y="${b.y + 20}">${esc(s.key)}${s.initial ? ' \u25c2 initial' : ''}${s.final ? ' (final)' : ''}</text>`);
    const own = selfEvents.get(s.id) ?? [];
    const lines = depth === 0 ? wrap(own, b.w - 24).map((l, i) => (i === 0 ? `in any state \u21bb ${l}` : l)) : own.map((e) => `\u21bb ${e}`);
    lines.forEach((l, i) => parts.push(`<text class="self" x="${b.x + 14}" y="${b.y + 38 + i * LINE}">${esc(l)}</text>`));
    parts.push('</g>');
    s.children.forEach((c) => drawState(c, depth + 1));
  };
  drawState(chart.root, 0);

  for (const p of pairs.values()) {
    const a = boxes.get(p.source)!;
    const b = boxes.get(p.target)!;
    parts.push(`<g class="transition" data-source="${esc(p.source)}" data-target="${esc(p.target)}">`);
    if (p.source === chart.root.id) {
      // From "any state": down into the target from the root's header.
      const x = b.x + b.w / 2;
      parts.push(`<path d="M${x},${b.y - 60} L${x},${b.y}" marker-end="url(#arrow)"/>`);
      p.events.forEach((e, i) => parts.push(`<text x="${x + 6}" y="${b.y - 44 + i * 13}">${esc(e)}</text>`));
    } else {
      const forward = a.x < b.x;
      const hops = Math.max(1, Math.round(Math.abs(b.x - a.x) / (W + GAP_X)));
      const lift = liftOf(hops, p.events.length);
      const x1 = a.x + a.w / 2 + (forward ? 20 : -20);
      const x2 = b.x + b.w / 2 + (forward ? -20 : 20);
      const y1 = forward ? a.y : a.y + a.h;
      const y2 = forward ? b.y : b.y + b.h;
      const apex = forward ? Math.min(y1, y2) - lift : Math.max(y1, y2) + lift;
      const mx = (x1 + x2) / 2;
      parts.push(`<path d="M${x1},${y1} C${x1},${apex} ${x2},${apex} ${x2},${y2}" marker-end="url(#arrow)"/>`);
      // Labels at the arc's top (or bottom), stacked away from the boxes.
      const ly = forward ? apex + 0.75 * (Math.min(y1, y2) - apex) - 4 : apex - 0.75 * (apex - Math.max(y1, y2)) + 14;
      p.events.forEach((e, i) => parts.push(`<text x="${mx}" y="${forward ? ly - (p.events.length - 1 - i) * 13 : ly + i * 13}" text-anchor="middle">${esc(e)}</text>`));
    }
    parts.push('</g>');
  }

  const w = rootBox.x + rootBox.w + 10;
  const h = rootBox.y + rootBox.h + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" class="statechart" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="conversation statechart">`
    + '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
    + parts.join('') + '</svg>';
}
