/**
 * The groups the transport relays for: what the router registered (it is authoritative for membership), and
 * nothing else. The transport never sees a group's name, description or messages, only who is in it.
 */

/** Most participants of a group besides the business (the Cloud API's limit). */
export const MAX_GROUP_MEMBERS = 8;

/** How a user who opens the invite link gets in: at once, or once the business approves. */
export type JoinApproval = 'auto_approve' | 'approval_required';

/** A group as the router registered it with `PUT /v1/groups/{group_id}`. */
export interface Group {
  id: string;
  /** The business's display number: the only party that posts to the group through `/v1`. */
  owner: string;
  /** The code of `https://chat.whatsapp.com/<invite_code>`; a replaced code is revoked. */
  inviteCode: string;
  joinApproval: JoinApproval;
  /** The members' wa_ids (the business not included), in the router's order. */
  members: string[];
}

/** The link prefix of an invite link. */
export const INVITE_LINK_PREFIX = 'https://chat.whatsapp.com/';

/** Thrown when a registration would give a group an invite code another group holds. */
export class InviteCodeInUseError extends Error {
  override readonly name = 'InviteCodeInUseError';
  readonly code = 'invite_code_in_use';
}

/** The registered groups, by id and by invite code. */
export class GroupRegistry {
  private readonly byId = new Map<string, Group>();
  private readonly byCode = new Map<string, string>();

  /** Registers or replaces a group; the old invite code stops working. Throws InviteCodeInUseError. */
  put(group: Group): void {
    const holder = this.byCode.get(group.inviteCode);
    if (holder !== undefined && holder !== group.id) throw new InviteCodeInUseError(`invite code held by another group`);
    const old = this.byId.get(group.id);
    if (old) this.byCode.delete(old.inviteCode);
    this.byId.set(group.id, { ...group, members: [...group.members] });
    this.byCode.set(group.inviteCode, group.id);
  }

  /** Forgets a group (its invite code with it); false when it was not registered. */
  delete(id: string): boolean {
    const g = this.byId.get(id);
    if (!g) return false;
    this.byId.delete(id);
    this.byCode.delete(g.inviteCode);
    return true;
  }

  /** A registered group. */
  get(id: string): Group | undefined {
    return this.byId.get(id);
  }

  /** The group an invite code opens, if it is current. */
  byInviteCode(code: string): Group | undefined {
    const id = this.byCode.get(code);
    return id === undefined ? undefined : this.byId.get(id);
  }

  /** Whether `waId` is on the group's registered member list. */
  isMember(id: string, waId: string): boolean {
    return this.byId.get(id)?.members.includes(waId) ?? false;
  }
}

/** The invite code of `https://chat.whatsapp.com/<code>`, or null for anything else. */
export function inviteCodeOf(link: string): string | null {
  if (!link.startsWith(INVITE_LINK_PREFIX)) return null;
  const code = link.slice(INVITE_LINK_PREFIX.length);
  return /^[A-Za-z0-9_-]{1,128}$/.test(code) ? code : null;
}
