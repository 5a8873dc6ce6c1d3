// Proves the first two steps of every JSON control op's parser (registration, map, add
// device, rebuild): a payload that is not JSON, or is JSON but not an object, is refused
// with MB_ERR_INVALID_ARGUMENT naming the op's field, and an object comes back as it is.

import t from 'tap';
import { InvalidArgumentError } from '../../src/common/errors.js';
import { parseJsonObject, parseJsonPayload } from '../../src/wire/json-payload.js';

t.test('a payload that is not JSON names its field', async (t) => {
  for (const text of ['', '{', 'nope', '\u0000']) {
    t.throws(() => parseJsonPayload(Buffer.from(text), 'map'), { code: 'MB_ERR_INVALID_ARGUMENT', field: 'map' }, JSON.stringify(text));
    t.throws(() => parseJsonObject(Buffer.from(text), 'rebuild'), { code: 'MB_ERR_INVALID_ARGUMENT', field: 'rebuild' }, JSON.stringify(text));
  }
});

t.test('JSON that is not an object is refused as such', async (t) => {
  for (const text of ['null', '5', '"text"', 'true']) {
    const err = t.throws(() => parseJsonObject(Buffer.from(text), 'addDevice'), { code: 'MB_ERR_INVALID_ARGUMENT', field: 'addDevice' }, text);
    t.ok(err instanceof InvalidArgumentError && err.message === 'addDevice: must be an object', text);
  }
  t.same(parseJsonPayload(Buffer.from('null'), 'map'), null, 'parseJsonPayload leaves the shape to its caller');
});

t.test('an object comes back unchanged, fields unchecked', async (t) => {
  t.same(parseJsonObject<{ path: string }>(Buffer.from('{"path":"/dev/sdb","extra":[1]}'), 'addDevice'), { path: '/dev/sdb', extra: [1] });
});
