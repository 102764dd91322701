import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from './keys.ts';

const VERSION = 'v1';

/** Raised when a sealed value cannot be opened (wrong key, tampered bytes, or a value moved to another key). */
export class SealError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SealError';
  }
}

/** AES-256-GCM with the key name as associated data: a sealed value cannot be moved to another key. */
export function seal(key: Buffer, plaintext: Uint8Array | string, aad: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([c.update(typeof plaintext === 'string' ? Buffer.from(plaintext) : plaintext), c.final()]);
  return `${VERSION}.${Buffer.concat([iv, ct, c.getAuthTag()]).toString('base64')}`;
}

/** Opens a value made by {@link seal}; throws {@link SealError} on any mismatch. */
export function open(key: Buffer, sealed: string, aad: string): Buffer {
  const dot = sealed.indexOf('.');
  if (dot < 0 || sealed.slice(0, dot) !== VERSION) throw new SealError('unknown sealed format');
  const raw = Buffer.from(sealed.slice(dot + 1), 'base64');
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

/** First byte of a value made by {@link sealBinary} (never the first byte of a {@link seal} string, 'v'). */
const BINARY_VERSION = 0x02;

/**
 * {@link seal} without the text encoding, for large binary values (Signal session records): one version
 * byte, the IV, the ciphertext and the tag, stored as raw bytes (base64 would add a third).
 */
export function sealBinary(key: Buffer, plaintext: Uint8Array, aad: string): Buffer {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([Buffer.of(BINARY_VERSION), iv, ct, c.getAuthTag()]);
}

/** Opens a value made by {@link sealBinary}, or a {@link seal} string read as bytes. */
export function openBinary(key: Buffer, sealed: Buffer, aad: string): Buffer {
  if (sealed[0] !== BINARY_VERSION) return open(key, sealed.toString('latin1'), aad);
  if (sealed.length < 29) throw new SealError('sealed value too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(1, 13));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    return Buffer.concat([d.update(sealed.subarray(13, sealed.length - 16)), d.final()]);
  } catch {
    throw new SealError('sealed value failed authentication');
  }
}

/** The id of a master key: the start of its SHA-256, stored with every data key it wraps. */
export function masterKeyId(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

/**
 * Per-business data keys wrapped by the master key (envelope encryption). Data keys are cached unwrapped
 * in memory only; Redis holds them wrapped, tagged with the id of the master key that wrapped them. The
 * first master key wraps; any of them unwraps, so rotating the master key needs no downtime: give every
 * process the new key first and the old one after it, re-wrap ({@link DataKeys.rewrapAll}), then drop the old.
 */
/** How long a process uses a cached data key before checking the business still has it. */
export const DATA_KEY_RECHECK_MS = 30_000;

export class DataKeys {
  /** Unwrapped keys and when this process last saw their wrapped copy in Redis. */
  private readonly cache = new Map<string, { dk: Buffer; checkedAt: number }>();
  private readonly masters: Map<string, Buffer>;
  private readonly current: Buffer;

  /**
   * @param recheckMs how long a cached key is used before this process checks that the business still has it
   *   (one GET per business per period): a business deleted elsewhere is forgotten here within this time.
   */
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    masterKeys: Buffer | Buffer[],
    private readonly recheckMs = DATA_KEY_RECHECK_MS,
    private readonly clock: () => number = Date.now,
  ) {
    const list = Array.isArray(masterKeys) ? masterKeys : [masterKeys];
    if (!list.length) throw new SealError('no master key');
    this.current = list[0]!;
    this.masters = new Map(list.map((k) => [masterKeyId(k), k]));
  }

  private wrap(name: string, dk: Buffer): string {
    return `${masterKeyId(this.current)}:${seal(this.current, dk, name)}`;
  }

  private unwrap(name: string, wrapped: string): Buffer {
    const m = /^([0-9a-f]{8}):(.*)$/s.exec(wrapped);
    const master = m ? this.masters.get(m[1]!) : this.current;
    if (!master) throw new SealError(`data key of ${name} is wrapped by master key ${m![1]}, which this process does not have`);
    return open(master, m ? m[2]! : wrapped, name);
  }

  /** Creates and stores a new data key for a business (idempotent: keeps an existing one). */
  async create(businessId: string): Promise<Buffer> {
    const dk = randomBytes(32);
    const name = this.keys.dataKey(businessId);
    const ok = await this.redis.set(name, this.wrap(name, dk), 'NX');
    if (ok) {
      this.cache.set(businessId, { dk, checkedAt: this.clock() });
      return dk;
    }
    return this.get(businessId);
  }

  /**
   * Destroys a business's data key: everything sealed with it becomes unreadable (crypto-shredding). This
   * process forgets it at once; every other process within `recheckMs` (it finds the wrapped key gone at its
   * next check), and meanwhile they find none of the business's numbers, so they open nothing of it.
   */
  async destroy(businessId: string): Promise<void> {
    await this.redis.del(this.keys.dataKey(businessId));
    this.cache.delete(businessId);
  }

  /** The business's unwrapped data key. */
  async get(businessId: string): Promise<Buffer> {
    const hit = this.cache.get(businessId);
    const now = this.clock();
    if (hit && now - hit.checkedAt < this.recheckMs) return hit.dk;
    const name = this.keys.dataKey(businessId);
    const wrapped = await this.redis.get(name);
    if (!wrapped) {
      this.cache.delete(businessId);
      throw new SealError(`no data key for business ${businessId}`);
    }
    // A re-wrap by another process changes the wrapping, never the key: a cached key stays valid.
    const dk = hit?.dk ?? this.unwrap(name, wrapped);
    this.cache.set(businessId, { dk, checkedAt: now });
    return dk;
  }

  /** Re-wraps every business's data key with the current master key; returns how many changed. */
  async rewrapAll(): Promise<number> {
    let changed = 0;
    const currentId = masterKeyId(this.current);
    for (const businessId of await this.redis.smembers(this.keys.businesses)) {
      const name = this.keys.dataKey(businessId);
      const wrapped = await this.redis.get(name);
      if (!wrapped || wrapped.startsWith(`${currentId}:`)) continue;
      const dk = this.unwrap(name, wrapped);
      // Only if unchanged meanwhile: a concurrent rotation must not be overwritten with a stale value.
      const ok = await this.redis.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end return 0", 1, name, wrapped, this.wrap(name, dk));
      if (ok === 1) changed++;
    }
    return changed;
  }

  /** A keyed hash under the business's data key: stable opaque ids that reveal nothing without the key. */
  async mac(businessId: string, input: string): Promise<Buffer> {
    return createHmac('sha256', await this.get(businessId)).update(input).digest();
  }
}

/** {@link open}, as the `Uint8Array<ArrayBuffer>` libsignal's deserializers take. */
export function openBytes(key: Buffer, sealed: string, aad: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(open(key, sealed, aad));
}
