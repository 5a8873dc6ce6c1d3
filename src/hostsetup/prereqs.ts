// The prereqs module: what meshblock and its installer need from a host that no package can
// be asked for automatically here, checked early with what to do. Check only: apply has no
// steps.
//   OpenSSL >= 1.0.2   The ScaleIO installation fails late, at its first TLS handshake, on
//                      older OpenSSL; ours says so first. The MDM's own self-signed
//                      certificate needs more: `openssl req -addext` (src/mdm/tls.ts) came
//                      with 1.1.1, so an MDM on an older host needs --tls-cert/--tls-key.
//   Node.js >= 20      meshblock's runtime, when it is to run on the host's own Node
//                      (nodeRuntime 'host'). With the runtime bundle meshblock install
//                      ships (nodeRuntime 'bundled', what install and host check assume)
//                      the host's Node is only reported: the bundle brings its own, with
//                      its own C library.
//   nbd-client         to attach volumes (meshblock attach), from the packages module.

import { applySteps, isNotFound, resolveTool, toolLabel, type ApplyResult, type Finding, type Host, type HostModule, type Step } from './host-module.js';

export const opensslVersionMin: readonly [number, number, number] = [1, 0, 2];
/** `openssl req -addext`, which the MDM's certificate is made with. */
export const opensslVersionMdmCertificate: readonly [number, number, number] = [1, 1, 1];
export const nodeMajorMin = 20;

export interface OpensslVersion {
  numbers: [number, number, number];
  /** The letter release of 1.x (`k` in 1.0.2k), empty on 3.x. */
  letter: string;
  text: string;
}

/** `OpenSSL 1.0.2k-fips  26 Jan 2017` -> 1.0.2 k; null for anything else (LibreSSL, garbage). */
export function parseOpensslVersion(output: string): OpensslVersion | null {
  const match = /^OpenSSL (\d+)\.(\d+)\.(\d+)([a-z]*)/.exec(output.trim());
  if (match === null) return null;
  return { numbers: [Number(match[1]), Number(match[2]), Number(match[3])], letter: match[4] as string, text: `${match[1]}.${match[2]}.${match[3]}${match[4]}` };
}

export function versionAtLeast(version: readonly number[], minimum: readonly number[]): boolean {
  for (let index = 0; index < minimum.length; index += 1) {
    const have = version[index] ?? 0;
    const need = minimum[index] ?? 0;
    if (have !== need) return have > need;
  }
  return true;
}

interface Item {
  ok: boolean;
  line: string;
}

async function opensslItem(host: Host): Promise<Item> {
  const tool = await resolveTool(host, 'openssl');
  const result = await host.transport.run(tool.command, ['version']);
  if (isNotFound(result)) return { ok: false, line: 'openssl: not installed: install the openssl package (yum install openssl / apt-get install openssl)' };
  const version = parseOpensslVersion(result.stdout);
  const minimum = opensslVersionMin.join('.');
  if (result.code !== 0 || version === null) {
    return { ok: false, line: `openssl (${toolLabel(tool)}): cannot read its version from '${result.stdout.trim() || result.stderr.trim()}': meshblock needs OpenSSL ${minimum} or later` };
  }
  if (!versionAtLeast(version.numbers, opensslVersionMin)) {
    return { ok: false, line: `openssl: OpenSSL ${version.text} is older than ${minimum}, which meshblock's TLS needs: update it (yum update openssl / apt-get install openssl)` };
  }
  const mdmNote = versionAtLeast(version.numbers, opensslVersionMdmCertificate)
    ? ''
    : `; older than ${opensslVersionMdmCertificate.join('.')}: an MDM here cannot make its own certificate (openssl req -addext), give mdm start --tls-cert/--tls-key`;
  return { ok: true, line: `openssl: OpenSSL ${version.text} (${toolLabel(tool)})${mdmNote}` };
}

async function nodeItem(host: Host): Promise<Item> {
  const tool = await resolveTool(host, 'node');
  const result = await host.transport.run(tool.command, ['--version']);
  const bundled = host.options.nodeRuntime === 'bundled';
  const install = `install Node.js ${nodeMajorMin} or later (https://nodejs.org; meshblock install uploads one)`;
  // With the bundle, what the host's Node is does not matter: said, never failed.
  const item = (line: string): Item => (bundled ? { ok: true, line: `${line.replace(/: install Node\.js.*$/, '')} (not needed: meshblock install ships its runtime bundle)` } : { ok: false, line });
  if (isNotFound(result)) return item(`node: not installed: ${install}`);
  const match = /^v(\d+)\.(\d+)\.(\d+)/.exec(result.stdout.trim());
  if (result.code !== 0 || match === null) return item(`node (${toolLabel(tool)}): cannot read its version from '${result.stdout.trim() || result.stderr.trim()}': ${install}`);
  if (Number(match[1]) < nodeMajorMin) return item(`node: ${result.stdout.trim()} is older than ${nodeMajorMin}: ${install}`);
  return { ok: true, line: `node: ${result.stdout.trim()} (${toolLabel(tool)})` };
}

async function nbdClientItem(host: Host): Promise<Item> {
  const tool = await resolveTool(host, 'nbd-client');
  // Presence is the question; nbd-client's own version flag differs between releases.
  const result = await host.transport.run(tool.command, ['-V']);
  if (isNotFound(result)) return { ok: false, line: 'nbd-client: not installed: meshblock host apply --only packages' };
  const version = /nbd (\d[\d.]*)/.exec(`${result.stdout}${result.stderr}`)?.[1];
  return { ok: true, line: `nbd-client: ${version === undefined ? 'present' : `nbd ${version}`} (${toolLabel(tool)})` };
}

export const prereqsModule: HostModule = {
  name: 'prereqs',
  description: `OpenSSL >= ${opensslVersionMin.join('.')}, nbd-client present, and Node.js >= ${nodeMajorMin} unless the runtime bundle is shipped (check only)`,

  async check(host: Host): Promise<Finding> {
    const items = [await opensslItem(host), await nodeItem(host), await nbdClientItem(host)];
    const failed = items.filter((item) => !item.ok);
    return {
      module: 'prereqs',
      applicable: true,
      ok: failed.length === 0,
      summary: failed.length === 0 ? 'OpenSSL, Node.js and nbd-client are as needed' : `${failed.map((item) => item.line.split(':')[0]).join(', ')}: not as needed (see below)`,
      details: items.map((item) => item.line),
    };
  },

  async plan(): Promise<Step[]> {
    return [];
  },

  async apply(host: Host, steps: readonly Step[]): Promise<ApplyResult> {
    return applySteps(host, prereqsModule, steps);
  },
};
