// Proves parseSdsRegistration (src/wire/mdm-ops.ts) on the host label: absent is no label (the
// registration of an SDS from before labels parses as before), a good one comes back, and a bad
// one (wrong type, empty, too long, a character outside the name rule) is an
// InvalidArgumentError naming registration.host.

import t from 'tap';
import { nameBytesMax } from '../../src/common/limits.js';
import { parseSdsRegistration } from '../../src/wire/mdm-ops.js';

const base = { sdsId: '5d50000000000001', name: 'sds1', address: '127.0.0.1:7072', devices: [{ deviceId: 'de70000000000001', path: '/dev/sdb', capacityBytes: 4096 }] };
const parse = (value: unknown): ReturnType<typeof parseSdsRegistration> => parseSdsRegistration(Buffer.from(JSON.stringify(value)));

t.test('no host: parsed as before labels, with no host field', async (t) => {
  const parsed = parse(base);
  t.same(parsed, base);
  t.notOk('host' in parsed, 'no host key at all');
});

t.test('a good label comes back', async (t) => {
  for (const host of ['hostA', 'node-7.rack_2', 'a', 'x'.repeat(nameBytesMax), '9lives']) t.equal(parse({ ...base, host }).host, host, host);
});

t.test('a bad label names registration.host', async (t) => {
  for (const host of ['', ' hostA', '-dash', '.dot', 'has space', 'h:1', 'é', 'x'.repeat(nameBytesMax + 1), 5, null, true, ['hostA'], { name: 'hostA' }]) {
    t.throws(() => parse({ ...base, host }), { code: 'MB_ERR_INVALID_ARGUMENT', field: 'registration.host' }, JSON.stringify(host));
  }
});

t.test('the other fields are still checked first', async (t) => {
  t.throws(() => parse({ ...base, sdsId: 'nope', host: 'hostA' }), { code: 'MB_ERR_INVALID_ARGUMENT', field: 'registration.sdsId' });
});
