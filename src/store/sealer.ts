import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import type { Keys } from './keys.ts';
import { addCounts, addVersion, createKeyring, readKeyring, rewrapVersions } from './keyring.ts';

/** Raised when a sealed value cannot be opened (wrong key, tampered bytes, or a value moved to another key). */
export class SealError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SealError';
  }
}

/**
 * Sealed formats. Text: `v<n>.` and base64 of IV, ciphertext and tag, where n is the data key version the
 * value is sealed under (`v1.` is also every value sealed before data keys had versions). Binary: 0x02 and
 * the same bytes raw (version 1), or 0x03, the version as 4 bytes big-endian, then the same bytes. A plain
 * Buffer key is version 1; a {@link DataKey} seals under its business's newest active version and opens
 * whichever version a value names.
 */
const TEXT_FORMAT = /^v([1-9]\d{0,9})\./;
/** First byte of a binary value sealed under version 1 (never the first byte of a text value, 'v'). */
const BINARY_V1 = 0x02;
/** First byte of a binary value that names its key version in the next 4 bytes. */
const BINARY_VERSIONED = 0x03;

/** The versions of one business's data key this process knows, and which one seals. */
export class Keyring {
  private readonly keys = new Map<number, Buffer>();
  private readonly activeAt = new Map<number, number>();
  private newest = 1;

  constructor(
    readonly businessId: string,
    private readonly hooks: { clock(): number; sealed(businessId: string, version: number): void; missing(businessId: string): void },
  ) {}

  /** Adds a version (a version's key and start never change, so learning it again is a no-op). */
  learn(version: number, key: Buffer, activeAt: number): void {
    if (this.keys.has(version)) return;
    this.keys.set(version, key);
    this.activeAt.set(version, activeAt);
    if (version > this.newest) this.newest = version;
  }

  /** The versions known, oldest first. */
  versions(): number[] {
    return [...this.keys.keys()].sort((a, b) => a - b);
  }

  /**
   * The newest version that has started sealing, and its key; counted, since one key may seal at most 2^32
   * values under random 96-bit IVs. A new version waits for its start so that every process knows it
   * before anyone seals with it (see {@link DataKeys.rotate}).
   */
  forSealing(): [number, Buffer] {
    const now = this.hooks.clock();
    let v = this.newest;
    while (v > 1 && !((this.activeAt.get(v) ?? Infinity) <= now && this.keys.has(v))) v--;
    this.hooks.sealed(this.businessId, v);
    return [v, this.keys.get(v)!];
  }

  /** The key of `version`; an unknown one makes the owner re-read the keyring at its next use. */
  forOpening(version: number): Buffer {
    const k = this.keys.get(version);
    if (k) return k;
    this.hooks.missing(this.businessId);
    throw new SealError(`sealed with data key version ${version}, which this process does not know yet`);
  }
}

/**
 * A business's data key as {@link DataKeys.get} hands it out: a Buffer holding version 1 (so it works
 * wherever a key did, and keyed hashes made with it never change), carrying the business's keyring, which
 * {@link seal} and {@link open} use. Made by {@link DataKey.withRing}, never by `new`.
 */
export class DataKey extends Buffer {
  declare readonly ring: Keyring;

  /** A DataKey with version 1's bytes and `ring`. */
  static withRing(v1: Buffer, ring: Keyring): DataKey {
    const k = Object.setPrototypeOf(Buffer.from(v1), DataKey.prototype) as DataKey;
    Object.defineProperty(k, 'ring', { value: ring });
    return k;
  }

  // Slices and copies are plain Buffers (Buffer's own constructor is deprecated).
  static get [Symbol.species](): BufferConstructor {
    return Buffer;
  }
}

function sealingKey(key: Buffer): [number, Buffer] {
  return key instanceof DataKey ? key.ring.forSealing() : [1, key];
}

function openingKey(key: Buffer, version: number): Buffer {
  if (key instanceof DataKey) return key.ring.forOpening(version);
  if (version !== 1) throw new SealError(`sealed with data key version ${version}, but given a version 1 key`);
  return key;
}

/**
 * Random 96-bit IVs, drawn from the CSPRNG 4 KiB at a time: one `randomBytes` call per seal cost ~3 µs, a
 * measurable share of every commit (several seals each). Each IV is copied out and its bytes are never
 * handed out twice; the pool is refilled, not reused, once spent.
 */
const IV_BYTES = 12;
const IV_POOL_IVS = 341;
let ivPool = Buffer.alloc(0);
let ivOffset = 0;

/** A fresh random IV of its own (not a view of the pool). */
export function nextIv(): Buffer {
  if (ivOffset + IV_BYTES > ivPool.length) {
    ivPool = randomBytes(IV_BYTES * IV_POOL_IVS);
    ivOffset = 0;
  }
  const iv = Buffer.allocUnsafe(IV_BYTES);
  ivPool.copy(iv, 0, ivOffset, ivOffset + IV_BYTES);
  ivOffset += IV_BYTES;
  return iv;
}

/** AES-256-GCM: IV, ciphertext and tag. */
function gcmSeal(key: Buffer, plaintext: Uint8Array, aad: string): Buffer[] {
  const iv = nextIv();
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return [iv, ct, c.getAuthTag()];
}

function gcmOpen(key: Buffer, raw: Buffer, aad: string): Buffer {
  if (raw.length < 28) throw new SealError('sealed value too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(raw.subarray(raw.length - 16));
    return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]);
  } catch {
    throw new SealError('sealed value failed authentication');
  }
}

/** AES-256-GCM with the key name as associated data: a sealed value cannot be moved to another key. */
export function seal(key: Buffer, plaintext: Uint8Array | string, aad: string): string {
  const [version, k] = sealingKey(key);
  const parts = gcmSeal(k, typeof plaintext === 'string' ? Buffer.from(plaintext) : plaintext, aad);
  return `v${version}.${Buffer.concat(parts).toString('base64')}`;
}

/** Opens a value made by {@link seal}; throws {@link SealError} on any mismatch. */
export function open(key: Buffer, sealed: string, aad: string): Buffer {
  const m = TEXT_FORMAT.exec(sealed);
  if (!m) throw new SealError('unknown sealed format');
  return gcmOpen(openingKey(key, Number(m[1])), Buffer.from(sealed.slice(m[0].length), 'base64'), aad);
}

/**
 * {@link seal} without the text encoding, for large binary values (Signal session records): a format byte
 * (and the key version after version 1), the IV, the ciphertext and the tag, stored as raw bytes (base64
 * would add a third).
 */
export function sealBinary(key: Buffer, plaintext: Uint8Array, aad: string): Buffer {
  const [version, k] = sealingKey(key);
  let head = Buffer.of(BINARY_V1);
  if (version !== 1) {
    head = Buffer.alloc(5, BINARY_VERSIONED);
    head.writeUInt32BE(version, 1);
  }
  return Buffer.concat([head, ...gcmSeal(k, plaintext, aad)]);
}

/** Opens a value made by {@link sealBinary}, or a {@link seal} string read as bytes. */
export function openBinary(key: Buffer, sealed: Buffer, aad: string): Buffer {
  if (sealed[0] === BINARY_V1) return gcmOpen(openingKey(key, 1), sealed.subarray(1), aad);
  if (sealed[0] === BINARY_VERSIONED) {
    if (sealed.length < 5) throw new SealError('sealed value too short');
    return gcmOpen(openingKey(key, sealed.readUInt32BE(1)), sealed.subarray(5), aad);
  }
  return open(key, sealed.toString('latin1'), aad);
}

/** The key version a sealed value (text or binary) names, or null when it is in no known format. */
export function sealedVersion(sealed: string | Buffer): number | null {
  if (Buffer.isBuffer(sealed)) {
    if (sealed[0] === BINARY_V1) return 1;
    if (sealed[0] === BINARY_VERSIONED && sealed.length >= 5) return sealed.readUInt32BE(1);
    sealed = sealed.subarray(0, 12).toString('latin1');
  }
  const m = TEXT_FORMAT.exec(sealed);
  return m ? Number(m[1]) : null;
}

/** The id of a master key: the start of its SHA-256, stored with every data key version it wraps. */
export function masterKeyId(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

/** How long a process uses a cached data key before checking the business still has it (and no newer version). */
export const DATA_KEY_RECHECK_MS = 30_000;

/** Seals under one data key version after which a new version is added: half the 2^32 bound of random 96-bit IVs. */
export const DATA_KEY_ROTATE_AFTER = 2 ** 31;

/** Tuning of {@link DataKeys}; the defaults are what production uses. */
export interface DataKeyOptions {
  /** Seals counted under one version after which a version is added automatically (default {@link DATA_KEY_ROTATE_AFTER}). */
  rotateAfter?: number;
  /**
   * How long after it is added a new version starts sealing (default: the re-check period plus 10 s). Every
   * process re-reads the keyring within the re-check period, so it can open a new version's values before
   * any process makes one; the 10 s cover a slow read and clocks a little apart.
   */
  activationMs?: number;
  /** A process adds its seal counts to Redis after this many under one version (default 10,000), and every re-check period. */
  flushEvery?: number;
  /** How many businesses' keys a process keeps unwrapped at most (default 100,000; least recently used go first). */
  maxCached?: number;
  /** Told when this process added a version because the newest one had sealed `rotateAfter` values. */
  onRotated?: (businessId: string, version: number) => void;
}

/**
 * Per-business data keys wrapped by the master key (envelope encryption). Each business has a keyring of
 * data key versions 1..n (src/store/keyring.ts): values are sealed under the newest started version and
 * name it, so older ones stay readable; versions are added by {@link rotate} (`sealpost keys rotate-data`)
 * and automatically once a version has sealed `rotateAfter` values, counted in process and added up in Redis
 * in batches. Keys are cached unwrapped in memory only; Redis holds them wrapped, tagged with the id of the
 * master key that wrapped them. The first master key wraps; any of them unwraps, so rotating the master key
 * needs no downtime: give every process the new key first and the old one after it, re-wrap
 * ({@link DataKeys.rewrapAll}), then drop the old.
 */
export class DataKeys {
  /** Unwrapped keyrings and when this process last read them from Redis (bounded: least recently used go). */
  private readonly cache: LRUCache<string, { dk: DataKey; checkedAt: number }>;
  /** Keyring reads under way, so concurrent callers share one read and one DataKey. */
  private readonly loading = new Map<string, Promise<DataKey>>();
  /** Seals made in this process and not yet added to Redis, by business and version. */
  private readonly pending = new Map<string, Map<number, number>>();
  private readonly flushes = new Set<Promise<void>>();
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly masters: Map<string, Buffer>;
  private readonly current: Buffer;
  private readonly rotateAfter: number;
  private readonly activationMs: number;
  private readonly flushEvery: number;
  private readonly hooks: ConstructorParameters<typeof Keyring>[1];

  /**
   * @param recheckMs how long a cached keyring is used before this process reads it again (one HGETALL per
   *   business per period): a business deleted elsewhere is forgotten here within this time, and a version
   *   added elsewhere learnt.
   */
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    masterKeys: Buffer | Buffer[],
    private readonly recheckMs = DATA_KEY_RECHECK_MS,
    private readonly clock: () => number = Date.now,
    private readonly opts: DataKeyOptions = {},
  ) {
    const list = Array.isArray(masterKeys) ? masterKeys : [masterKeys];
    if (!list.length) throw new SealError('no master key');
    this.current = list[0]!;
    this.masters = new Map(list.map((k) => [masterKeyId(k), k]));
    this.rotateAfter = opts.rotateAfter ?? DATA_KEY_ROTATE_AFTER;
    this.activationMs = opts.activationMs ?? recheckMs + 10_000;
    this.flushEvery = opts.flushEvery ?? 10_000;
    this.cache = new LRUCache({ max: opts.maxCached ?? 100_000 });
    this.hooks = { clock, sealed: (b, v) => this.counted(b, v), missing: (b) => this.stale(b) };
  }

  /** The associated data a version is wrapped under: version 1 keeps the key name alone, as before versions. */
  private aadOf(name: string, version: number): string {
    return version === 1 ? name : `${name}#${version}`;
  }

  private wrap(name: string, version: number, dk: Buffer): string {
    return `${masterKeyId(this.current)}:${seal(this.current, dk, this.aadOf(name, version))}`;
  }

  private unwrap(name: string, version: number, wrapped: string): Buffer {
    const m = /^([0-9a-f]{8}):(.*)$/s.exec(wrapped);
    const master = m ? this.masters.get(m[1]!) : this.current;
    if (!master) throw new SealError(`data key of ${name} is wrapped by master key ${m![1]}, which this process does not have`);
    return open(master, m ? m[2]! : wrapped, this.aadOf(name, version));
  }

  /** Creates and stores a new data key for a business (idempotent: keeps an existing one). */
  async create(businessId: string): Promise<DataKey> {
    const key = randomBytes(32);
    const name = this.keys.dataKey(businessId);
    if (!(await createKeyring(this.redis, name, this.wrap(name, 1, key)))) return this.get(businessId);
    const dk = DataKey.withRing(key, new Keyring(businessId, this.hooks));
    dk.ring.learn(1, key, 0);
    this.cache.set(businessId, { dk, checkedAt: this.clock() });
    return dk;
  }

  /**
   * Destroys a business's data key, every version: everything sealed with it becomes unreadable
   * (crypto-shredding). This process forgets it at once; every other process within `recheckMs` (it finds the
   * keyring gone at its next check), and meanwhile they find none of the business's numbers, so they open
   * nothing of it.
   */
  async destroy(businessId: string): Promise<void> {
    await this.redis.del(this.keys.dataKey(businessId));
    this.cache.delete(businessId);
    this.pending.delete(businessId);
  }

  /** The business's data key (its keyring, as a {@link DataKey}). */
  async get(businessId: string): Promise<DataKey> {
    const hit = this.cache.get(businessId);
    if (hit && this.clock() - hit.checkedAt < this.recheckMs) return hit.dk;
    let p = this.loading.get(businessId);
    if (!p) {
      p = this.load(businessId, hit?.dk).finally(() => this.loading.delete(businessId));
      this.loading.set(businessId, p);
    }
    return p;
  }

  private async load(businessId: string, known: DataKey | undefined): Promise<DataKey> {
    const now = this.clock();
    const name = this.keys.dataKey(businessId);
    const stored = await readKeyring(this.redis, name);
    if (!stored) {
      this.cache.delete(businessId);
      throw new SealError(`no data key for business ${businessId}`);
    }
    // A re-wrap by another process changes the wrapping, never a key: versions already known stay valid.
    const dk = known ?? DataKey.withRing(this.unwrap(name, 1, stored.wrapped.get(1)!), new Keyring(businessId, this.hooks));
    for (const [v, wrapped] of stored.wrapped) {
      if (!dk.ring.versions().includes(v)) dk.ring.learn(v, this.unwrap(name, v, wrapped), stored.activeAt.get(v) ?? 0);
    }
    this.cache.set(businessId, { dk, checkedAt: now });
    return dk;
  }

  /** A value named a version this process does not know: read the keyring again at the next use. */
  private stale(businessId: string): void {
    const hit = this.cache.get(businessId);
    if (hit) hit.checkedAt = -Infinity;
  }

  /**
   * Adds a new version of the business's data key. It starts sealing `activationMs` later (by then every
   * process has read it, so none meets a value under a version it does not know); older versions stay and
   * keep opening what they sealed. Throws {@link SealError} for a business without a data key.
   * @param activationMs how long until the version starts; shorter than the default only where one process
   *   uses the key (tests), since another would meet values under a version it has not read yet.
   */
  async rotate(businessId: string, activationMs = this.activationMs): Promise<{ version: number; activeAt: number }> {
    for (;;) {
      const stored = await readKeyring(this.redis, this.keys.dataKey(businessId));
      if (!stored) throw new SealError(`no data key for business ${businessId}`);
      const added = await this.addVersion(businessId, stored.newest, activationMs);
      if (added) return added;
      // Another process added one meanwhile: add ours after it (an explicit rotation always adds a version).
    }
  }

  /** Adds version `newest + 1` unless another process added a version first (then null). */
  private async addVersion(businessId: string, newest: number, activationMs = this.activationMs): Promise<{ version: number; activeAt: number } | null> {
    const name = this.keys.dataKey(businessId);
    const key = randomBytes(32);
    const activeAt = this.clock() + activationMs;
    const r = await addVersion(this.redis, name, newest, this.wrap(name, newest + 1, key), activeAt);
    if (r === 'gone') throw new SealError(`no data key for business ${businessId}`);
    if (r === 'lost') return null;
    this.cache.get(businessId)?.dk.ring.learn(r, key, activeAt);
    return { version: r, activeAt };
  }

  /** One seal under `version` in this process; added to Redis in batches (see {@link flush}). */
  private counted(businessId: string, version: number): void {
    this.add(businessId, version, 1, true);
  }

  private add(businessId: string, version: number, seals: number, flushWhenFull: boolean): void {
    let m = this.pending.get(businessId);
    if (!m) this.pending.set(businessId, (m = new Map()));
    const n = (m.get(version) ?? 0) + seals;
    m.set(version, n);
    if (flushWhenFull && n >= this.flushEvery) this.track(this.flushBusiness(businessId));
    else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined;
        this.flushPending();
      }, this.recheckMs);
      this.flushTimer.unref();
    }
  }

  /** Starts a flush of every business with seals counted. */
  private flushPending(): void {
    for (const b of [...this.pending.keys()]) this.track(this.flushBusiness(b));
  }

  /** Keeps a business's flush until it ends, so {@link flush} can wait for it (only these: never a flush() itself). */
  private track(p: Promise<void>): void {
    const t = p.catch(() => undefined).finally(() => this.flushes.delete(t));
    this.flushes.add(t);
  }

  /**
   * Adds the seals counted in this process to each keyring (one INCRBY per version), and adds a version for
   * a business whose newest one has now sealed `rotateAfter` values (a compare-and-set: processes racing add one).
   */
  async flush(): Promise<void> {
    this.flushPending();
    await Promise.all([...this.flushes]);
  }

  private async flushBusiness(businessId: string): Promise<void> {
    const counts = this.pending.get(businessId);
    if (!counts?.size) return;
    this.pending.delete(businessId);
    let r;
    try {
      r = await addCounts(this.redis, this.keys.dataKey(businessId), counts);
    } catch (e) {
      // Kept for the timer's next flush (not at once: Redis may be down), unless the connection is closed for good.
      if (this.redis.status !== 'end') for (const [v, n] of counts) this.add(businessId, v, n, false);
      throw e;
    }
    if (!r) return;
    const total = r.totals.get(r.newest);
    if (total === undefined || total < this.rotateAfter) return;
    const added = await this.addVersion(businessId, r.newest);
    if (added) this.opts.onRotated?.(businessId, added.version);
  }

  /** Stops counting in the background and adds what is counted (call before closing the Redis connection). */
  async close(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    await this.flush().catch(() => undefined);
  }

  /** Re-wraps every version of every business's data key with the current master key; returns how many changed. */
  async rewrapAll(): Promise<number> {
    let changed = 0;
    const currentId = masterKeyId(this.current);
    for (const businessId of await this.redis.smembers(this.keys.businesses)) {
      const name = this.keys.dataKey(businessId);
      const stored = await readKeyring(this.redis, name);
      if (!stored) continue;
      const changes: [number, string, string][] = [];
      for (const [v, wrapped] of stored.wrapped) {
        if (!wrapped.startsWith(`${currentId}:`)) changes.push([v, wrapped, this.wrap(name, v, this.unwrap(name, v, wrapped))]);
      }
      // Each only if unchanged meanwhile: a concurrent re-wrap must not be overwritten with a stale value.
      if (changes.length) changed += await rewrapVersions(this.redis, name, changes);
    }
    return changed;
  }

  /**
   * A keyed hash under the business's data key: stable opaque ids that reveal nothing without the key. Always
   * under version 1 (a DataKey's own bytes), so ids made before a rotation still match after it.
   */
  async mac(businessId: string, input: string): Promise<Buffer> {
    return createHmac('sha256', await this.get(businessId)).update(input).digest();
  }
}

/** {@link open}, as the `Uint8Array<ArrayBuffer>` libsignal's deserializers take. */
export function openBytes(key: Buffer, sealed: string, aad: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(open(key, sealed, aad));
}
