import { describe, expect, it } from 'vitest';
import { componentOf, summarise } from '../../bench/profile-summary.ts';

describe('bench/profile-summary', () => {
  it('files each sampled frame under its component and leaves idle time out', () => {
    expect(componentOf('file:///x/node_modules/ioredis/built/Command.js', 'f')).toBe('ioredis');
    expect(componentOf('file:///x/node_modules/@signalapp/libsignal-client/dist/index.js', 'f')).toBe('@signalapp/libsignal-client');
    expect(componentOf('file:///work/main/src/runtime/actor-host.ts', 'drain')).toBe('sealpost src/runtime');
    expect(componentOf('node:zlib', 'processChunkSync')).toMatch(/zlib/);
    expect(componentOf('', '(garbage collector)')).toBe('V8 garbage collector');
    const profile = {
      nodes: [
        { id: 1, callFrame: { functionName: '(idle)', url: '' } },
        { id: 2, callFrame: { functionName: 'write', url: 'file:///a/node_modules/ioredis/x.js' } },
        { id: 3, callFrame: { functionName: '(garbage collector)', url: '' } },
      ],
      samples: [1, 2, 2, 3, 1],
      timeDeltas: [5000, 1000, 2000, 500, 9000],
    };
    const s = summarise([profile]);
    expect(Object.fromEntries(s)).toEqual({ ioredis: 3, 'V8 garbage collector': 0.5 });
  });
});
