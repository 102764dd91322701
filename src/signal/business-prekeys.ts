import {
  KyberPreKeyRecord,
  KyberPreKeyStore,
  PreKeyRecord,
  PreKeyStore,
  SignedPreKeyRecord,
  SignedPreKeyStore,
  type PublicKey,
} from '@signalapp/libsignal-client';
import type { Redis } from 'ioredis';
import type { NumberIdentity } from '../store/businesses.ts';
import { openBytes, seal } from '../store/sealer.ts';
import { keyUploadFromRecords, keyUploadToWire, type KeyUploadWire } from './bundle.ts';
import { generateKyberPreKey, generateKyberPreKeys, generatePreKeys, generateSignedPreKey, nextKeyId } from './prekeys.ts';

/** How many one-time keys of each kind one upload carries, and when to top up (Signal's numbers). */
export const PREKEY_BATCH = 100;
export const PREKEY_MINIMUM = 10;
/** Signed and last-resort keys are rotated this often (Signal: every 1.5 to 2 days). */
export const ROTATE_EVERY_MS = 2 * 86_400_000;

/** Last-resort Kyber ids live in the upper half of the 24-bit id space, one-time Kyber ids in the lower. */
const LAST_RESORT_BASE = 0x800000;
const nextOneTime = (id: number) => (id >= LAST_RESORT_BASE - 1 ? 1 : id + 1);
const nextLastResort = (id: number) => (id < LAST_RESORT_BASE || id >= 0xffffff ? LAST_RESORT_BASE : id + 1);

/** Key names of one business number's prekeys. */
export interface PreKeyKeys {
  /** Hash: sealed private records (`ec:<id>`, `ky:<id>`, `sp:<id>`, `lr:<id>`) and counters. */
  hash: string;
  /** Set: (kyber id, signed id, base key) triples already used with a last-resort key (replay guard). */
  lastResortUsed: string;
}

/**
 * The private half of a business number's published prekeys, on Redis, sealed with the business's data key.
 * Decryption reads through the libsignal stores below; consumption (one-time keys removed, last-resort
 * triples recorded) is buffered and applied after the conversation's commit, so a step that fails to
 * commit can be replayed with the same keys.
 */
export class BusinessPreKeys {
  constructor(
    private readonly redis: Redis,
    private readonly keys: PreKeyKeys,
    private readonly dk: Buffer,
    private readonly identity: NumberIdentity,
    /** How long old signed and last-resort private keys are kept (the longest a message can wait). */
    private readonly keepOldMs: number,
  ) {}

  private seal(field: string, bytes: Uint8Array): string {
    return seal(this.dk, bytes, `${this.keys.hash}:${field}`);
  }

  private async record(field: string): Promise<Uint8Array<ArrayBuffer> | null> {
    const v = await this.redis.hget(this.keys.hash, field);
    return v ? openBytes(this.dk, v, `${this.keys.hash}:${field}`) : null;
  }

  /**
   * What the directory should hold now: a full upload the first time, one-time keys when fewer than
   * PREKEY_MINIMUM are left there, new signed and last-resort keys when they are due. Null when nothing is
   * needed. New private keys are stored before the upload is returned, so a retried upload reuses no id.
   */
  async plan(remoteCounts: { prekeys: number; kyber_prekeys: number } | null, now = Date.now()): Promise<KeyUploadWire | null> {
    const meta = await this.redis.hmget(this.keys.hash, 'cur_sp', 'cur_lr', 'rotated_at', 'next_ec', 'next_ky');
    let [curSp, curLr] = meta.map((v) => (v ? Number(v) : 0)) as [number, number];
    const rotatedAt = Number(meta[2] ?? 0);
    let nextEc = Number(meta[3] ?? 1);
    let nextKy = Number(meta[4] ?? 1);
    const writes: Record<string, string> = {};
    let rotate = !curSp || now - rotatedAt >= ROTATE_EVERY_MS;
    if (rotate) {
      curSp = curSp ? nextKeyId(curSp) : 1;
      // Kyber one-time and last-resort ids share libsignal's namespace: separate ranges keep them apart.
      curLr = nextLastResort(curLr);
      const sp = generateSignedPreKey(this.identity.identity, curSp, now);
      const lr = generateKyberPreKey(this.identity.identity, curLr, now);
      writes[`sp:${curSp}`] = this.seal(`sp:${curSp}`, sp.serialize());
      writes[`lr:${curLr}`] = this.seal(`lr:${curLr}`, lr.serialize());
      writes[`at:sp:${curSp}`] = String(now);
      writes[`at:lr:${curLr}`] = String(now);
      Object.assign(writes, { cur_sp: String(curSp), cur_lr: String(curLr), rotated_at: String(now) });
    }
    const topUp = !remoteCounts || remoteCounts.prekeys < PREKEY_MINIMUM || remoteCounts.kyber_prekeys < PREKEY_MINIMUM;
    let preKeys: PreKeyRecord[] = [];
    let kyberPreKeys: KyberPreKeyRecord[] = [];
    if (topUp) {
      if (nextKy + PREKEY_BATCH >= LAST_RESORT_BASE) nextKy = 1; // a batch never crosses into the last-resort range
      preKeys = generatePreKeys(nextEc, PREKEY_BATCH);
      kyberPreKeys = generateKyberPreKeys(this.identity.identity, nextKy, PREKEY_BATCH, now);
      for (const r of preKeys) writes[`ec:${r.id()}`] = this.seal(`ec:${r.id()}`, r.serialize());
      for (const r of kyberPreKeys) writes[`ky:${r.id()}`] = this.seal(`ky:${r.id()}`, r.serialize());
      for (let i = 0; i < PREKEY_BATCH; i++) {
        nextEc = nextKeyId(nextEc);
        nextKy = nextOneTime(nextKy);
      }
      Object.assign(writes, { next_ec: String(nextEc), next_ky: String(nextKy) });
    }
    if (!rotate && !topUp && remoteCounts) return null;
    await this.redis.hset(this.keys.hash, writes);
    await this.pruneOld(now, curSp, curLr);
    const spBytes = await this.record(`sp:${curSp}`);
    const lrBytes = await this.record(`lr:${curLr}`);
    if (!spBytes || !lrBytes) throw new Error('business prekeys missing after generation');
    return keyUploadToWire(keyUploadFromRecords({
      identity: this.identity.identity,
      registrationId: this.identity.registrationId,
      signedPreKey: SignedPreKeyRecord.deserialize(spBytes),
      kyberLastResort: KyberPreKeyRecord.deserialize(lrBytes),
      preKeys,
      kyberPreKeys,
    }));
  }

  /** Deletes signed and last-resort private keys replaced longer ago than messages can live. */
  private async pruneOld(now: number, curSp: number, curLr: number): Promise<void> {
    const all = await this.redis.hgetall(this.keys.hash);
    const drop: string[] = [];
    for (const [field, at] of Object.entries(all)) {
      const m = /^at:(sp|lr):(\d+)$/.exec(field);
      if (!m) continue;
      const id = Number(m[2]);
      const current = m[1] === 'sp' ? id === curSp : id === curLr;
      if (!current && now - Number(at) > this.keepOldMs) drop.push(field, `${m[1]}:${id}`);
    }
    if (drop.length) await this.redis.hdel(this.keys.hash, ...drop);
  }

  /** libsignal stores for one decryption; call `commit()` after the conversation's commit succeeded. */
  stores(): { preKeys: PreKeyStore; signedPreKeys: SignedPreKeyStore; kyberPreKeys: KyberPreKeyStore; commit: () => Promise<void> } {
    const removeFields: string[] = [];
    const triples: string[] = [];
    const self = this;
    class Pre extends PreKeyStore {
      override async savePreKey(): Promise<void> {
        throw new Error('prekeys are generated by the key publisher, not by libsignal');
      }
      override async getPreKey(id: number): Promise<PreKeyRecord> {
        const b = await self.record(`ec:${id}`);
        if (!b) throw new Error(`prekey ${id} not found`);
        return PreKeyRecord.deserialize(b);
      }
      override async removePreKey(id: number): Promise<void> {
        removeFields.push(`ec:${id}`);
      }
    }
    class Signed extends SignedPreKeyStore {
      override async saveSignedPreKey(): Promise<void> {
        throw new Error('signed prekeys are generated by the key publisher');
      }
      override async getSignedPreKey(id: number): Promise<SignedPreKeyRecord> {
        const b = await self.record(`sp:${id}`);
        if (!b) throw new Error(`signed prekey ${id} not found`);
        return SignedPreKeyRecord.deserialize(b);
      }
    }
    class Kyber extends KyberPreKeyStore {
      override async saveKyberPreKey(): Promise<void> {
        throw new Error('kyber prekeys are generated by the key publisher');
      }
      override async getKyberPreKey(id: number): Promise<KyberPreKeyRecord> {
        const b = (await self.record(`ky:${id}`)) ?? (await self.record(`lr:${id}`));
        if (!b) throw new Error(`kyber prekey ${id} not found`);
        return KyberPreKeyRecord.deserialize(b);
      }
      override async markKyberPreKeyUsed(id: number, signedPreKeyId: number, baseKey: PublicKey): Promise<void> {
        if (await self.redis.hexists(self.keys.hash, `ky:${id}`)) {
          removeFields.push(`ky:${id}`);
          return;
        }
        // A last-resort key: the same base key twice is a replayed PreKey message.
        const triple = `${id}:${signedPreKeyId}:${Buffer.from(baseKey.serialize()).toString('base64')}`;
        if (await self.redis.sismember(self.keys.lastResortUsed, triple)) throw new Error('reused base key with last-resort kyber prekey');
        triples.push(triple);
      }
    }
    return {
      preKeys: new Pre(),
      signedPreKeys: new Signed(),
      kyberPreKeys: new Kyber(),
      commit: async () => {
        // Two keys in different slots, each written on its own (nothing relies on both changing together).
        await Promise.all([
          removeFields.length ? this.redis.hdel(this.keys.hash, ...removeFields) : undefined,
          triples.length ? this.redis.multi().sadd(this.keys.lastResortUsed, ...triples).pexpire(this.keys.lastResortUsed, this.keepOldMs + ROTATE_EVERY_MS).exec() : undefined,
        ]);
      },
    };
  }
}
