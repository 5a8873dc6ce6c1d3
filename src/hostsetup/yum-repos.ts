// The yum-repos module: CentOS's base and updates repositories enabled, so that yum can
// install numactl, libaio and nbd. XenServer's Dom0 ships /etc/yum.repos.d/CentOS-Base.repo
// with `enabled=0` on every section; stock CentOS enables them by leaving the key out. The
// installer may turn them off again once the packages are in (disableAfter), since XenServer
// does not support updating Dom0 from CentOS's repositories.

import { detectOs } from './host-os.js';
import { applySteps, fileStep, notApplicable, type ApplyResult, type Finding, type Host, type HostModule, type Step } from './host-module.js';
import { parseRepoFile, sectionEnabled, setReposEnabled } from './yum-repo-file.js';

export const centosBaseRepoPath = '/etc/yum.repos.d/CentOS-Base.repo';
/** The repositories numactl, libaio (base) and their updates come from. */
export const packageRepoNames: readonly string[] = ['base', 'updates'];

const repoList = packageRepoNames.map((name) => `[${name}]`).join(' and ');

async function repoText(host: Host): Promise<{ text: string | null; applicable: Finding | null }> {
  const os = await detectOs(host.transport);
  if (os.family !== 'rhel') return { text: null, applicable: notApplicable('yum-repos', `not a yum host (${os.name})`, [os.evidence]) };
  const text = await host.transport.readFile(centosBaseRepoPath);
  if (text === null) return { text: null, applicable: notApplicable('yum-repos', `no ${centosBaseRepoPath}: nothing to enable`, [os.evidence]) };
  return { text, applicable: null };
}

/** Whether each of `names` is enabled, as yum reads the file. */
export function reposEnabled(text: string, names: readonly string[] = packageRepoNames): Map<string, boolean> {
  const sections = parseRepoFile(text, centosBaseRepoPath);
  return new Map(names.map((name) => {
    const section = sections.find((entry) => entry.name === name);
    return [name, section !== undefined && sectionEnabled(section, centosBaseRepoPath)];
  }));
}

export const yumReposModule: HostModule = {
  name: 'yum-repos',
  description: `CentOS ${repoList} repositories enabled on yum hosts (${centosBaseRepoPath})`,

  async check(host: Host): Promise<Finding> {
    const { text, applicable } = await repoText(host);
    if (applicable !== null) return applicable;
    const os = await detectOs(host.transport);
    const sections = parseRepoFile(text as string, centosBaseRepoPath);
    const details = [os.evidence];
    const disabled: string[] = [];
    for (const name of packageRepoNames) {
      const section = sections.find((entry) => entry.name === name);
      if (section === undefined) {
        details.push(`[${name}] is missing from ${centosBaseRepoPath}: restore the file from the centos-release package`);
        disabled.push(name);
        continue;
      }
      const enabled = sectionEnabled(section, centosBaseRepoPath);
      const said = section.keys.filter((key) => key.name === 'enabled').pop();
      details.push(`[${name}] ${enabled ? 'enabled' : 'disabled'} (${said === undefined ? "no enabled= line: yum's default is 1" : `enabled=${said.value}, line ${said.line + 1}`})`);
      if (!enabled) disabled.push(name);
    }
    const ok = disabled.length === 0;
    return {
      module: 'yum-repos',
      applicable: true,
      ok,
      summary: ok ? `${repoList} are enabled` : `${disabled.map((name) => `[${name}]`).join(' and ')} ${disabled.length === 1 ? 'is' : 'are'} not enabled: yum cannot install the packages`,
      details,
    };
  },

  async plan(host: Host): Promise<Step[]> {
    const { text, applicable } = await repoText(host);
    if (applicable !== null || text === null) return [];
    const edit = setReposEnabled(text, packageRepoNames, true, centosBaseRepoPath);
    if (!edit.changed) return [];
    return [fileStep(centosBaseRepoPath, text, edit.text, edit.changes.join('; '))];
  },

  async apply(host: Host, steps: readonly Step[]): Promise<ApplyResult> {
    return applySteps(host, yumReposModule, steps);
  },
};

/**
 * Sets `enabled=0` again on `names` (for the installer, once the packages are installed),
 * backing the file up first. Nothing changes where they are disabled already or the host is
 * not a yum host.
 */
export async function disableAfter(host: Host, names: readonly string[] = packageRepoNames): Promise<ApplyResult> {
  const result: ApplyResult = { module: 'yum-repos', done: [], backups: [], notes: [] };
  const { text } = await repoText(host);
  if (text === null) return result;
  const edit = setReposEnabled(text, names, false, centosBaseRepoPath);
  if (!edit.changed) return result;
  const backup = await host.transport.backup(centosBaseRepoPath);
  if (backup !== null) result.backups.push(backup);
  await host.transport.writeFile(centosBaseRepoPath, edit.text);
  result.done.push(`edited ${centosBaseRepoPath}${backup === null ? '' : ` (backup ${backup})`}: ${edit.changes.join('; ')}`);
  return result;
}
