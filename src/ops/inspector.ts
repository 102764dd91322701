import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { conversationMachine, type ConversationContext } from '../../machines/conversation.ts';
import { conversationOfWamid, isConversationId } from '../runtime/ids.ts';
import { readPersistedSnapshot } from '../runtime/snapshot-codec.ts';
import type { Keys } from '../store/keys.ts';
import type { DataKeys } from '../store/sealer.ts';
import type { Stores } from '../store/stores.ts';
import { readTraceLines } from '../trace/store.ts';
import { decodeDeviceSessions } from '../signal/device-sessions-codec.ts';
import { openBinary } from '../store/sealer.ts';
import { activeIds, chartOf, renderChart, type Chart } from './statechart.ts';

/** What the inspector reads: the stores, never the API's business data. */
export interface InspectorDeps {
  stores: Stores;
  keys: Keys;
  dataKeys: DataKeys;
  /** The shared Redis (the wamid index lives there). */
  redis: Redis;
}

/** One step of the trace, as the timeline shows it: no content exists in traces, and none is added. */
export interface TimelineStep {
  seq: number;
  at: number | null;
  event: Record<string, unknown>;
  state: unknown;
  commands: Record<string, unknown>[];
}

/** A message of the conversation and where it stands. */
export interface MessageState {
  wamid: string;
  direction: 'outbound' | 'inbound';
  /** Outbound: the machine's own state while the message is owed (queued, encrypting, sending...), else the last status reported to the business. */
  state: string;
  status: string | null;
  error_code: number | null;
  seq: number | null;
  attempts: number | null;
  accepted_at: number | null;
  expires_at: number | null;
  next_attempt_at: number | null;
  /** Outbound and still owed: the user's devices that have not acknowledged it yet (null: not encrypted yet, or done). */
  awaiting_devices: number[] | null;
}

/** One of the user's devices as the conversation knows it: numbers and flags only (no keys). */
export interface DeviceState {
  device_id: number;
  /** On the last device list accepted (signed by the pinned primary). */
  listed: boolean;
  /** The router holds a session with it. */
  session: boolean;
}

export interface Inspection {
  conversation_id: string;
  business_id: string | null;
  phone_number_id: string | null;
  state: unknown;
  active_states: string[];
  status: string;
  version: number;
  last_inbound_at: number | null;
  retention_until: number | null;
  timer: { id: string; at: number } | null;
  /** The user's devices: those on the accepted list and those the router has a session with. */
  devices: DeviceState[];
  /** The counter of the last device list accepted; null before the first. */
  device_list_counter: number | null;
  messages: MessageState[];
  trace: TimelineStep[];
}

let chart: Chart | undefined;
/** The conversation machine's chart (computed once: the definition does not change while running). */
export function conversationChart(): Chart {
  chart ??= chartOf(conversationMachine);
  return chart;
}

/**
 * The conversation inspector's data: a conversation (by its id, or the wamid of one of its messages), its
 * machine state, its messages' states and its trace. Everything here is ids, states, times and counters:
 * the stores hold content only sealed, and the inspector never opens it. Null when no such conversation.
 */
export async function inspect(deps: InspectorDeps, id: string): Promise<Inspection | null> {
  let conv = isConversationId(id) ? id : conversationOfWamid(id);
  if (!conv && id.startsWith('wamid.')) conv = (JSON.parse((await deps.redis.get(deps.keys.messageIndex(id))) ?? 'null') as { c?: string } | null)?.c ?? null;
  if (!conv) return null;
  const redis = await deps.stores.forConversation(conv);
  const [meta, traceLines, retention] = await Promise.all([
    redis.hgetall(deps.keys.meta(conv)),
    readTraceLines(redis, deps.keys.trace(conv), conv),
    redis.zrange(deps.keys.retention(conv), '0', '-1'),
  ]);
  if (!meta.business_id && !traceLines.length) return null;
  const dk = meta.business_id ? await deps.dataKeys.get(meta.business_id) : null;
  const persisted = dk ? ((await readPersistedSnapshot(redis, deps.keys.snapshot(conv), dk, conv)) as { value: unknown; status: string; context: ConversationContext } | null) : null;
  const sess = dk ? await redis.getBuffer(deps.keys.session(conv)) : null;
  const keys = sess && dk ? decodeDeviceSessions(openBinary(dk, sess, `${deps.keys.session(conv)}:s`)) : null;

  const trace: TimelineStep[] = traceLines.map((l) => {
    const t = JSON.parse(l) as { seq: number; at?: number; event: Record<string, unknown>; state: unknown; commands: Record<string, unknown>[] };
    return { seq: t.seq, at: t.at ?? (typeof t.event.at === 'number' ? t.event.at : null), event: t.event, state: t.state, commands: t.commands ?? [] };
  });

  // The last status each message was reported with, from the commands of the trace.
  const reported = new Map<string, { status: string; code: number | null }>();
  const inbound = new Set<string>();
  for (const step of trace) {
    for (const c of step.commands) {
      if (c.type === 'webhook.status' && typeof c.wamid === 'string') reported.set(c.wamid, { status: String(c.status), code: typeof c.errorCode === 'number' ? c.errorCode : null });
      if (c.type === 'inbound.store' && typeof c.id === 'string') inbound.add(c.id);
    }
  }
  const messages: MessageState[] = [];
  const seen = new Set<string>();
  for (const m of persisted?.context.messages ?? []) {
    if (m.skip || m.read) continue;
    seen.add(m.wamid);
    const r = reported.get(m.wamid);
    messages.push({
      wamid: m.wamid, direction: 'outbound', state: m.state, status: r?.status ?? null, error_code: r?.code ?? null, seq: m.seq,
      attempts: m.attempts, accepted_at: m.acceptedAt, expires_at: m.expiresAt, next_attempt_at: m.nextAttemptAt, awaiting_devices: m.owed ?? null,
    });
  }
  // Messages no longer owed (delivered, read, failed) or received: from the retention index and the trace.
  for (const wamid of new Set([...retention, ...reported.keys(), ...inbound])) {
    if (seen.has(wamid)) continue;
    const r = reported.get(wamid);
    const isIn = inbound.has(wamid);
    messages.push({
      wamid, direction: isIn ? 'inbound' : 'outbound', state: isIn ? 'received' : (r?.status ?? 'unknown'), status: r?.status ?? null,
      error_code: r?.code ?? null, seq: null, attempts: null, accepted_at: null, expires_at: null, next_attempt_at: null, awaiting_devices: null,
    });
  }

  const value = persisted?.value ?? trace.at(-1)?.state ?? null;
  return {
    conversation_id: conv,
    business_id: meta.business_id ?? null,
    phone_number_id: meta.phone_number_id ?? null,
    state: value,
    active_states: value === null ? [] : activeIds(conversationChart().root.id, value),
    status: persisted?.status ?? (meta.business_id ? 'active' : 'deleted'),
    version: Number(meta.v ?? 0),
    last_inbound_at: persisted?.context.lastInboundAt ?? null,
    retention_until: persisted?.context.retentionUntil ?? null,
    timer: persisted?.context.timer ?? null,
    devices: (keys?.devices ?? []).map((d) => ({ device_id: d.deviceId, listed: d.listed !== null, session: d.session !== null })),
    device_list_counter: keys?.listCounter ?? null,
    messages,
    trace,
  };
}

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const time = (ms: number | null) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace('Z', '') : '—');

/** Event fields shown in the timeline besides its type (ids, times, counters: traces carry nothing else). */
function eventDetail(e: Record<string, unknown>): string {
  return Object.entries(e).filter(([k]) => k !== 'type').map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
}

function commandLabel(c: Record<string, unknown>): string {
  const extra = c.status ? ` ${c.status}${c.errorCode ? ` (${c.errorCode})` : ''}` : c.event ? ` ${c.event}` : '';
  return `${c.type}${extra}`;
}

const STYLE = `body{font:14px system-ui,sans-serif;margin:1.5rem;color:#1d2733;background:#f7f8fa}
h1{font-size:1.3rem;margin:0 0 .3rem}h2{font-size:1.05rem;margin:1.6rem 0 .5rem}code{font:12px ui-monospace,monospace}
.summary{display:flex;gap:2rem;flex-wrap:wrap;margin:.6rem 0}.summary div{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:.4rem .8rem}
.summary b{display:block;font-size:11px;color:#5b6675;text-transform:uppercase;letter-spacing:.04em}
.chart{background:#fff;border:1px solid #d5dae1;border-radius:6px;overflow:auto;padding:.5rem}
.statechart .state rect{fill:#fff;stroke:#8a96a5;stroke-width:1.5}.statechart .state.root>rect{fill:#f1f4f7;stroke-dasharray:4 3}
.statechart .state.final rect.inner{fill:none}.statechart .state.active>rect{fill:#d9f2e7;stroke:#1d6b57;stroke-width:3}
.statechart .state.active>text.name{fill:#1d6b57;font-weight:700}.statechart text{font:12px system-ui,sans-serif;fill:#1d2733}
.statechart text.name{font-weight:600;font-size:13px}.statechart text.self{fill:#5b6675;font-size:11px}
.statechart .transition path{fill:none;stroke:#5b6675;stroke-width:1.3}.statechart .transition text{font-size:11px;fill:#34495e}
.statechart marker path{fill:#5b6675}
table{border-collapse:collapse;background:#fff;width:100%}th,td{border:1px solid #d5dae1;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}td.cmds span{display:inline-block;background:#eef1f4;border-radius:3px;padding:0 .3rem;margin:1px}
.status-failed{color:#a12a2a;font-weight:600}.status-delivered,.status-read{color:#1d6b57;font-weight:600}`;

/**
 * The page's Content-Security-Policy: nothing loads or runs; the one inline style sheet is allowed by its
 * hash, not by 'unsafe-inline'.
 */
export const INSPECTOR_CSP = `default-src 'none'; style-src 'sha256-${createHash('sha256').update(STYLE).digest('base64')}'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;

/** The inspector page: the statechart with the current state highlighted, the messages, the trace timeline. */
export function inspectorPage(data: Inspection): string {
  const svg = renderChart(conversationChart(), data.active_states);
  const rows = data.messages.map((m) => `<tr data-wamid="${esc(m.wamid)}"><td><code>${esc(m.wamid)}</code></td><td>${m.direction}</td><td>${esc(m.state)}</td>`
    + `<td class="status-${esc(m.status ?? 'none')}">${esc(m.status ?? '—')}${m.error_code ? ` (${m.error_code})` : ''}</td><td>${m.seq ?? '—'}</td><td>${m.attempts ?? '—'}</td>`
    + `<td>${time(m.accepted_at)}</td><td>${time(m.next_attempt_at)}</td><td>${time(m.expires_at)}</td><td>${m.awaiting_devices?.join(', ') ?? '—'}</td></tr>`).join('');
  const devices = data.devices.map((d) => `<tr data-device="${d.device_id}"><td>${d.device_id}${d.device_id === 1 ? ' (phone)' : ''}</td><td>${d.listed ? 'yes' : 'no'}</td><td>${d.session ? 'yes' : 'no'}</td></tr>`).join('');
  const steps = data.trace.map((s) => `<tr class="step" data-seq="${s.seq}"><td>${s.seq}</td><td>${time(s.at)}</td><td><b>${esc(s.event.type)}</b> <code>${esc(eventDetail(s.event))}</code></td>`
    + `<td>${esc(typeof s.state === 'string' ? s.state : JSON.stringify(s.state))}</td><td class="cmds">${s.commands.map((c) => `<span>${esc(commandLabel(c))}</span>`).join(' ')}</td></tr>`).join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Conversation ${esc(data.conversation_id)} · Sealpost</title><style>${STYLE}</style></head><body>
<h1>Conversation <code>${esc(data.conversation_id)}</code></h1>
<div class="summary"><div><b>state</b><span id="current-state">${esc(typeof data.state === 'string' ? data.state : JSON.stringify(data.state))}</span></div>
<div><b>phone number id</b>${esc(data.phone_number_id ?? '—')}</div><div><b>version</b>${data.version}</div>
<div><b>last inbound</b>${time(data.last_inbound_at)}</div><div><b>retention until</b>${time(data.retention_until)}</div>
<div><b>timer</b>${data.timer ? `${esc(data.timer.id)} at ${time(data.timer.at)}` : '—'}</div></div>
<h2>Statechart</h2><div class="chart">${svg}</div>
<h2>Devices (${data.devices.length})</h2>
<p>Device list counter: ${data.device_list_counter ?? '—'}</p>
<table id="devices"><thead><tr><th>device</th><th>on the signed list</th><th>session</th></tr></thead><tbody>${devices}</tbody></table>
<h2>Messages (${data.messages.length})</h2>
<table id="messages"><thead><tr><th>wamid</th><th>direction</th><th>state</th><th>last status</th><th>seq</th><th>attempts</th><th>accepted</th><th>next attempt</th><th>expires</th><th>awaiting devices</th></tr></thead><tbody>${rows}</tbody></table>
<h2>Trace (${data.trace.length} steps)</h2>
<table id="timeline"><thead><tr><th>seq</th><th>time (UTC)</th><th>event</th><th>state after</th><th>commands</th></tr></thead><tbody>${steps}</tbody></table>
</body></html>`;
}
