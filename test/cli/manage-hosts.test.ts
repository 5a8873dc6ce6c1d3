// Proves host labels in the management surface, against the real REST API over HTTPS (the
// in-test controller of test/helpers/rest.ts, SDSs registered as the MDM service registers
// them): the REST Sds object's hostLabel (null without one), `meshblock sds list`'s HOST column,
// and addSds's MB_ERR_HOST_FAULT_SET refusal as REST answers it (409, errorCode 1028, the code,
// a message naming both SDSs, the host and both fault sets) and as `meshblock sds add` prints it.

import t from 'tap';
import type { RestSds } from '../../src/mdm/rest-objects.js';
import { restErrorCodes } from '../../src/mdm/rest-errors.js';
import { call, login, startTestApi } from '../helpers/rest.js';
import { manageRunner, oneLine } from '../helpers/manage.js';

t.test('hostLabel, the HOST column and the host/fault-set refusal', async (t) => {
  const api = await startTestApi(t);
  const run = manageRunner(api);
  const ok = async (args: string[]): Promise<string> => {
    const result = await run(args);
    t.equal(result.code, 0, `${args.slice(0, 2).join(' ')} succeeds${result.stderr === '' ? '' : `: ${result.stderr}`}`);
    return result.stdout;
  };
  const register = (index: number, name: string, host: string | null): string => {
    const sdsId = (0x5d5000000000 + index).toString(16).padStart(16, '0');
    api.controller.state.apply({ type: 'registerSds', sdsId, name, address: `127.0.0.1:${7100 + index}`, nowMs: 1, host });
    return sdsId;
  };
  register(1, 'web1.1', 'web1');
  register(2, 'web1.2', 'web1');
  register(3, 'plain', null);

  const token = await login(api);
  const sdss = (await call(api, 'GET', '/api/types/Sds/instances', { token })).body as RestSds[];
  t.same(Object.fromEntries(sdss.map((sds) => [sds.name, sds.hostLabel])), { 'web1.1': 'web1', 'web1.2': 'web1', plain: null }, 'REST hostLabel, null without a label');

  const table = await ok(['sds', 'list']);
  t.match(table, /^NAME\s+ID\s+ADDRESS\s+HOST\s+STATE\s+PD\s+FAULT SET\s+DEVICES$/m, 'the header has HOST after ADDRESS');
  t.match(table, /web1\.2\s+[0-9a-f]{16}\s+127\.0\.0\.1:7102\s+web1\s+Normal\s+\(not added\)/);
  t.match(table, /plain\s+[0-9a-f]{16}\s+127\.0\.0\.1:7103\s+-\s+Normal/);

  await ok(['pd', 'add', '--name', 'pd1']);
  await ok(['fault-set', 'add', '--pd', 'pd1', '--name', 'rack1']);
  await ok(['fault-set', 'add', '--pd', 'pd1', '--name', 'rack2']);
  await ok(['sds', 'add', '--sds', 'web1.1', '--pd', 'pd1', '--fault-set', 'rack1']);

  const pd = Object.values(api.controller.state.model.protectionDomains)[0]?.id as string;
  const rack2 = Object.values(api.controller.state.model.faultSets).find((set) => set.name === 'rack2')?.id as string;
  const web12 = Object.values(api.controller.state.model.sdss).find((sds) => sds.name === 'web1.2')?.id as string;
  const reply = await call(api, 'POST', '/api/types/Sds/instances', { token, body: { sdsId: web12, protectionDomainId: pd, faultSetId: rack2 } });
  t.equal(reply.status, 409, 'REST: 409');
  t.match(reply.body, { httpStatusCode: 409, code: 'MB_ERR_HOST_FAULT_SET', errorCode: restErrorCodes['MB_ERR_HOST_FAULT_SET'] });
  t.equal(restErrorCodes['MB_ERR_HOST_FAULT_SET'], 1028);
  t.match((reply.body as { message: string }).message, /SDS 'web1\.2' cannot go to fault set 'rack2': SDS 'web1\.1' of the same host 'web1' is in fault set 'rack1'/);

  oneLine(t, await run(['sds', 'add', '--sds', 'web1.2', '--pd', 'pd1', '--fault-set', 'rack2']), /SDS 'web1\.2' cannot go to fault set 'rack2': SDS 'web1\.1' of the same host 'web1' is in fault set 'rack1'/, 1, 'the CLI prints the refusal, exit 1');
  await ok(['sds', 'add', '--sds', 'web1.2', '--pd', 'pd1', '--fault-set', 'rack1']);
  t.match(await ok(['sds', 'list']), /web1\.2\s+[0-9a-f]{16}\s+127\.0\.0\.1:7102\s+web1\s+Normal\s+pd1\s+rack1\s+0/, 'the same fault set is fine');
});
