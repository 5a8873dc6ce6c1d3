#!/usr/bin/env bash
# Installs the Debian packages meshblock's build and tests use, only those missing.
# Debian 12, run as root (CI and the development machines are both). Nothing is
# downloaded from anywhere but Debian's archive.
set -euo pipefail

packages=(
  make g++             # node-gyp builds native/meshblock_native.c at npm install
  nbdkit               # the reference NBD server (benchmarks, comparisons)
  libnbd-bin           # nbdinfo, nbdcopy
  qemu-utils           # qemu-img, qemu-io, qemu-nbd
  fio                  # load with verification (nbd engine)
  nbd-client           # the kernel client's userspace half
  strace               # watching fdatasync in the multi-connection flush test
  openssl              # certificates for the TLS tests
  util-linux procps    # losetup, pgrep
  busybox-static       # the runtime-bundle test's root with no C library of its own (a static shell and tools)
  lvm2 gdisk xfsprogs fdisk  # real formats (PV, GPT, XFS, MBR) for the SDS formatted-device refusal tests
  openssh-server openssh-client  # real sshd servers (in network namespaces) for the host-setup and installer tests
  iproute2             # ip netns, veth: simulated hosts
  numactl libaio1      # what the packages host module requires of an SDS host (the installer test's hosts are this machine)
  qemu-system-x86 cpio kmod  # the kernel-client VM test (scripts/vm): QEMU (TCG), the guest's initramfs, depmod for its modules
  etcd-server etcd-client  # the MDM cluster's consensus store (Master, Slave, Tie-Breaker) and etcdctl for the tests
  chromium             # the web dashboard's browser tests (driven by puppeteer-core; no browser download)
  prometheus           # scrapes a lab in the metrics test; promtool checks the rules and every endpoint's output
  snmptrapd snmp smitools  # receives the MDM's SNMP traps; snmptranslate and smilint check the MIB
  python3-cinder python3-os-brick  # the real ScaleIO clients (cinder's PowerFlex driver, os-brick's connector) the REST API is tested with; they run under /usr/bin/python3
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "install-deps: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  # No service may start from a package's install script (openssh-server would start sshd on
  # every address): the tests start their own, on addresses they make. policy-rc.d says no.
  guard=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  if [[ -n "$guard" ]]; then rm -f "$guard"; fi
  if ((status != 0)); then exit "$status"; fi
fi
