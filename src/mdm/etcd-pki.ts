// PLACEHOLDER, from the installer branch: the real module is written by the "etcd" helper
// (contract of issue 15, "etcd: PKI and members") and replaces this file at merge. Only the
// signature the installer calls (through src/cli/install.ts) is here.

export async function createEtcdPki(dir: string, options: { members: Array<{ name: string; ips: string[] }>; clients: string[] }): Promise<void> {
  void dir;
  void options;
  throw new Error('not yet');
}
