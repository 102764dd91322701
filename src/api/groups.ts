import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { GroupService } from '../runtime/groups.ts';

type Hook = { onRequest: (req: FastifyRequest) => Promise<void> };

/**
 * The Groups API routes (docs/groups.md), each with and without the Graph version segment. `GET` and `DELETE
 * /{group_id}` share their paths with `/{phone_number_id}` and `/{media_id}` and are registered in app.ts; the
 * id's shape tells them apart.
 */
export function registerGroups(app: FastifyInstance, groups: GroupService, auth: Hook, groupAuth: Hook): void {
  const both = (method: 'get' | 'post' | 'delete', path: string, hook: Hook, handler: (req: FastifyRequest) => Promise<unknown> | unknown) => {
    app[method](`/:version${path}`, hook, async (req) => handler(req));
    app[method](path, hook, async (req) => handler(req));
  };
  both('post', '/:phone_number_id/groups', auth, async (req) => ({ messaging_product: 'whatsapp', ...(await groups.create(req.phoneNumber!, req.body)) }));
  both('get', '/:phone_number_id/groups', auth, (req) => groups.list(req.phoneNumber!, req.query));
  both('post', '/:group_id', groupAuth, (req) => groups.update(req.group!, req.body));
  both('post', '/:group_id/invite_link', groupAuth, (req) => groups.resetInvite(req.group!));
  both('delete', '/:group_id/invite_link', groupAuth, (req) => groups.revokeInvite(req.group!));
  both('get', '/:group_id/join_requests', groupAuth, (req) => groups.joinRequests(req.group!));
  both('post', '/:group_id/join_requests', groupAuth, (req) => groups.approve(req.group!, req.body));
  both('delete', '/:group_id/join_requests', groupAuth, (req) => groups.reject(req.group!, req.body));
  both('delete', '/:group_id/participants', groupAuth, (req) => groups.removeParticipants(req.group!, req.body));
}
