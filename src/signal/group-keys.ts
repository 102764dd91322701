import {
  ProtocolAddress,
  SenderKeyDistributionMessage,
  SenderKeyRecord,
  SenderKeyStore,
  groupDecrypt,
  groupEncrypt,
  processSenderKeyDistributionMessage,
  type Uuid,
} from '@signalapp/libsignal-client';

/** Senders' device id in groups: the phone (members write from it; the business is device 1 of its number). */
const DEVICE = 1;

/**
 * A group's sender keys as the router holds them (docs/groups.md): the business's own, for the current
 * distribution id only, and the last one each member distributed. Kept in memory for a drain and
 * serialized whole, sealed, into the group actor's record.
 */
export class GroupKeys extends SenderKeyStore {
  private readonly m: Map<string, string>;

  constructor(serialized?: string | null) {
    super();
    this.m = new Map(Object.entries(serialized ? (JSON.parse(serialized) as Record<string, string>) : {}));
  }

  serialize(): string {
    return JSON.stringify(Object.fromEntries(this.m));
  }

  override async saveSenderKey(sender: ProtocolAddress, distributionId: Uuid, record: SenderKeyRecord): Promise<void> {
    const name = sender.name();
    // One key per sender: a newer distribution replaces the older one.
    for (const k of [...this.m.keys()]) if (k.startsWith(`${name}/`)) this.m.delete(k);
    this.m.set(`${name}/${distributionId}`, Buffer.from(record.serialize()).toString('base64'));
  }

  override async getSenderKey(sender: ProtocolAddress, distributionId: Uuid): Promise<SenderKeyRecord | null> {
    const b = this.m.get(`${sender.name()}/${distributionId}`);
    return b ? SenderKeyRecord.deserialize(new Uint8Array(Buffer.from(b, 'base64'))) : null;
  }

  /** Whether a key of this sender for this distribution id is held. */
  has(sender: string, distributionId: string): boolean {
    return this.m.has(`${sender}/${distributionId}`);
  }

  /** Forgets a member's key (the member left). */
  forget(sender: string): void {
    for (const k of [...this.m.keys()]) if (k.startsWith(`${sender}/`)) this.m.delete(k);
  }

  /** A new sender key of `owner` for the group: returns its distribution id (the old key is dropped). */
  async rotate(owner: string, distributionId: string): Promise<void> {
    this.forget(owner);
    await SenderKeyDistributionMessage.create(ProtocolAddress.new(owner, DEVICE), distributionId, this);
  }

  /** The distribution message of the owner's current key (base64), as of its current iteration. */
  async distribution(owner: string, distributionId: string): Promise<string> {
    const skdm = await SenderKeyDistributionMessage.create(ProtocolAddress.new(owner, DEVICE), distributionId, this);
    return Buffer.from(skdm.serialize()).toString('base64');
  }

  async encrypt(owner: string, distributionId: string, plaintext: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
    return (await groupEncrypt(ProtocolAddress.new(owner, DEVICE), distributionId, this, plaintext)).serialize();
  }

  /** Processes a member's distribution message; returns its distribution id. Throws on a malformed one. */
  async accept(member: string, skdmBase64: string): Promise<string> {
    const skdm = SenderKeyDistributionMessage.deserialize(new Uint8Array(Buffer.from(skdmBase64, 'base64')));
    await processSenderKeyDistributionMessage(ProtocolAddress.new(member, DEVICE), skdm, this);
    return skdm.distributionId();
  }

  async decrypt(member: string, body: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
    return groupDecrypt(ProtocolAddress.new(member, DEVICE), this, body);
  }
}
