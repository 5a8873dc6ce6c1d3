#!/usr/bin/env bash
# Builds (or finds cached) the guest that the VM harness boots: Debian's kernel and a base
# initramfs holding busybox (Debian's busybox-static), this host's own nbd-client, lvm2
# (+ dmsetup), e2fsprogs and fio with every shared library they load (resolved with ldd),
# the kernel modules they need (nbd, dm-mod, ext4, virtio-net, ...) and
# scripts/vm/guest-init.sh as /init. run-guest.mjs appends a small per-run cpio (settings,
# lvm.conf) to it.
#
# Prints two lines, `kernel=PATH` and `initrd=PATH`. Everything lives in
# ${MESHBLOCK_VM_CACHE:-$HOME/.cache/meshblock-vm}: downloaded .debs under debs/, builds under
# guest-KEY/, where KEY hashes the kernel and busybox package versions, the host package
# versions of the binaries copied in, and this script and guest-init.sh, so a change to any
# of them builds anew and an unchanged second run only prints the paths. Concurrent runs
# serialise on a flock. Host tools it lacks (qemu-system-x86, cpio, kmod, nbd-client, lvm2,
# e2fsprogs, fio) are installed with apt-get; the packages whose files go into the guest
# (kernel, busybox-static) are only `apt-get download`ed into the cache.
#
# Why the host's binaries and not Debian packages unpacked: they are exactly what the rest
# of the test suite already drives, and their libraries are there to copy; a package's
# library closure would need a dependency resolver of our own.
set -Eeuo pipefail

die() {
  echo "build-guest: $*" >&2
  exit 1
}
# Whatever else fails says where, in one line.
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MESHBLOCK_VM_CACHE:-$HOME/.cache/meshblock-vm}
init_script="$here/guest-init.sh"
[[ -f $init_script ]] || die "missing $init_script"
mkdir -p "$cache/debs" || die "cannot create cache directory $cache"

exec 9>"$cache/.lock"
flock 9 || die "cannot lock $cache/.lock"

# --- host tools -------------------------------------------------------------------------
# command -> Debian package providing it.
declare -A host_tools=(
  [qemu-system-x86_64]=qemu-system-x86
  [cpio]=cpio
  [depmod]=kmod
  [dpkg-deb]=dpkg
  [nbd-client]=nbd-client
  [lvm]=lvm2
  [dmsetup]=dmsetup
  [mkfs.ext4]=e2fsprogs
  [fio]=fio
  [ldd]=libc-bin
  [sha256sum]=coreutils
)
export PATH="$PATH:/usr/sbin:/sbin"
# At most once per build, re-executions included.
apt_update() {
  if [[ ${MESHBLOCK_VM_APT_UPDATED:-0} == 0 ]]; then
    apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
    export MESHBLOCK_VM_APT_UPDATED=1
  fi
}
missing=()
for tool in "${!host_tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${host_tools[$tool]}")
done
if ((${#missing[@]} > 0)); then
  [[ $(id -u) -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
  echo "build-guest: installing ${missing[*]}" >&2
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    die "apt-get install ${missing[*]} failed"
fi

# --- package versions and the cache key --------------------------------------------------
candidate() { # package -> candidate version, empty when apt knows no such package
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}
resolve_packages() {
  if [[ -z $(candidate linux-image-amd64) ]]; then
    apt_update
    [[ -n $(candidate linux-image-amd64) ]] || die "apt knows no linux-image-amd64 (is Debian's archive in sources.list?)"
  fi
  # linux-image-amd64 is a metapackage; the kernel is the linux-image-X-amd64 it depends on.
  kernel_package=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  [[ -n $kernel_package ]] || die "cannot tell which kernel package linux-image-amd64 depends on"
  kernel_version=$(candidate "$kernel_package")
  busybox_version=$(candidate busybox-static)
  [[ -n $kernel_version && -n $busybox_version ]] || die "apt has no candidate for $kernel_package or busybox-static"
}
# apt-cache takes seconds per call on a busy machine; what it answered holds as long as the
# package lists are the same files, so a warm run asks nothing.
lists_stamp=$(stat -c '%n %Y %s' /var/lib/apt/lists/* 2>/dev/null | sha256sum | cut -c1-16)
resolved="$cache/resolved-packages"
kernel_package= kernel_version= busybox_version=
if [[ -f $resolved ]]; then
  read -r stamp kernel_package kernel_version busybox_version <"$resolved" || true
  [[ ${stamp:-} == "$lists_stamp" ]] || kernel_package=
fi
if [[ -z $kernel_package || -z $kernel_version || -z $busybox_version ]]; then
  resolve_packages
  lists_stamp=$(stat -c '%n %Y %s' /var/lib/apt/lists/* 2>/dev/null | sha256sum | cut -c1-16)
  echo "$lists_stamp $kernel_package $kernel_version $busybox_version" >"$resolved"
fi

host_versions=$(dpkg-query -W -f='${Package}=${Version}\n' nbd-client lvm2 dmsetup e2fsprogs fio libc6 2>/dev/null | sort)
key=$(
  {
    echo "$kernel_package=$kernel_version busybox-static=$busybox_version"
    echo "$host_versions"
    sha256sum "$init_script" "${BASH_SOURCE[0]}" | cut -d' ' -f1
  } | sha256sum | cut -c1-16
)
out="$cache/guest-$key"

if [[ -f $out/ready ]]; then
  echo "kernel=$out/vmlinuz"
  echo "initrd=$out/initrd.cpio"
  exit 0
fi

# --- downloads ---------------------------------------------------------------------------
fetched=
fetch() { # package version -> $fetched, the path of the cached .deb
  local package=$1 version=$2 deb tmp
  deb="$cache/debs/${package}_${version//:/%3a}_amd64.deb"
  if [[ ! -f $deb ]]; then
    tmp=$(mktemp -d "$cache/debs/.download.XXXXXX")
    # As root apt-get download drops to the _apt user unless told not to; the cache is
    # root's, so stay root (it only writes the .deb, which dpkg-deb then checks).
    if ! (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$package=$version" >/dev/null 2>&1); then
      rm -rf "$tmp"
      # Stale package lists name versions the archive no longer has: update them once and
      # start over, since the versions (and so the cache key) may change.
      if [[ ${MESHBLOCK_VM_APT_UPDATED:-0} == 0 ]]; then
        apt_update
        exec bash "${BASH_SOURCE[0]}"
      fi
      die "apt-get download $package=$version failed"
    fi
    mv "$tmp"/*.deb "$deb"
    rm -rf "$tmp"
  fi
  dpkg-deb --info "$deb" >/dev/null 2>&1 || { rm -f "$deb"; die "downloaded $deb is not a valid package"; }
  fetched=$deb
}
echo "build-guest: building guest $key ($kernel_package $kernel_version)" >&2
fetch "$kernel_package" "$kernel_version"
kernel_deb=$fetched
fetch busybox-static "$busybox_version"
busybox_deb=$fetched

# --- staging -----------------------------------------------------------------------------
work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc/lvm,proc,sys,dev,run,tmp,mnt,root,var}
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
ln -s /run "$root/var/run"
ln -s /proc/mounts "$root/etc/mtab"

# The kernel and its modules.
dpkg-deb -x "$kernel_deb" "$work/kernel"
kver=$(basename "$(ls -d "$work"/kernel/lib/modules/*/ | head -1)")
[[ -n $kver && -f $work/kernel/boot/vmlinuz-$kver ]] || die "no vmlinuz in $kernel_deb"
# Debian's .deb ships no modules.dep: make one for the whole tree, then copy only the
# closure of what the guest loads. crc32c_generic is no symbol dependency of ext4 (ext4 asks
# the crypto API for "crc32c" by name) so it is listed itself.
depmod -b "$work/kernel" "$kver" || die "depmod on the kernel tree failed"
wanted_modules=(nbd dm-mod ext4 crc32c_generic virtio_net virtio_pci)
moddir="$work/kernel/lib/modules/$kver"
declare -A copied=()
for module in "${wanted_modules[@]}"; do
  file=$(find "$moddir/kernel" -name "$module.ko" -o -name "${module//-/_}.ko" | head -1)
  [[ -n $file ]] || die "kernel $kver has no module $module"
  rel=${file#"$moddir/"}
  for dep in $rel $(awk -F': *' -v m="$rel" '$1 == m { print $2 }' "$moddir/modules.dep"); do
    [[ -n ${copied[$dep]:-} ]] && continue
    mkdir -p "$(dirname "$root/usr/lib/modules/$kver/$dep")"
    cp "$moddir/$dep" "$root/usr/lib/modules/$kver/$dep"
    copied[$dep]=1
  done
done
cp "$moddir"/modules.builtin "$moddir"/modules.builtin.modinfo "$moddir"/modules.order "$root/usr/lib/modules/$kver/"
depmod -b "$root" "$kver" || die "depmod on the guest tree failed"
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"

# Binaries from this host, with their libraries at the same paths (merged /usr as here).
binaries=(
  /usr/sbin/nbd-client /usr/sbin/lvm /usr/sbin/dmsetup /usr/sbin/mke2fs /usr/sbin/e2fsck
  /usr/sbin/blkid /usr/bin/fio
)
copy_file() { # host path -> same path in the guest, following symlinks
  local source=$1 target
  target="$root/usr/${source#/usr/}"
  [[ $source == /usr/* ]] || target="$root/usr$source"
  [[ -e $target ]] && return 0
  mkdir -p "$(dirname "$target")"
  cp -L "$source" "$target"
}
for binary in "${binaries[@]}"; do
  resolved=$(command -v "$(basename "$binary")" 2>/dev/null || true)
  [[ -x $binary ]] || binary=$resolved
  [[ -n $binary && -x $binary ]] || die "host binary $(basename "$binary") not found"
  copy_file "$binary"
  # ldd prints "name => /path (addr)" and the loader as "/lib64/ld-linux... (addr)".
  while read -r library; do
    copy_file "$library"
  done < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
done
for tool in mkfs.ext4 fsck.ext4; do
  ln -sf mke2fs "$root/usr/sbin/$tool"
done
ln -sf e2fsck "$root/usr/sbin/fsck.ext4"
for tool in pvcreate pvremove pvs pvscan vgcreate vgchange vgremove vgs vgscan vgmknodes lvcreate lvremove lvs lvscan lvmconfig; do
  ln -sf lvm "$root/usr/sbin/$tool"
done
[[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$root/etc/"

# busybox for everything else, as links where no real binary stands.
dpkg-deb -x "$busybox_deb" "$work/busybox"
cp "$work/busybox/bin/busybox" "$root/usr/bin/busybox"
while read -r applet; do
  [[ -z $applet || $applet == linuxrc ]] && continue
  target="$root/usr/${applet#/}"
  target=${target/\/usr\/usr\//\/usr\/}
  name=$(basename "$applet")
  # A real binary of that name in either directory wins, wherever busybox would put it.
  [[ -e $root/usr/bin/$name || -e $root/usr/sbin/$name || -L $target ]] && continue
  mkdir -p "$(dirname "$target")"
  ln -s /usr/bin/busybox "$target"
done < <("$root/usr/bin/busybox" --list-full)

cp "$init_script" "$root/init"
chmod 755 "$root/init"
echo "$kver" >"$root/etc/meshblock-guest-kernel"

# Uncompressed: under TCG the kernel inflates a gzip archive several times slower than it
# copies a plain one, and the cache is local.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$work/initrd.cpio" ||
  die "cpio failed"

rm -rf "$out"
mkdir -p "$out"
mv "$work/vmlinuz" "$work/initrd.cpio" "$out/"
echo "$kernel_package $kernel_version $kver" >"$out/ready"
# Older builds and packages are of no use once the key moved on.
find "$cache" -maxdepth 1 -name 'guest-*' ! -name "guest-$key" -exec rm -rf {} +
find "$cache/debs" -maxdepth 1 -name '*.deb' ! -path "$kernel_deb" ! -path "$busybox_deb" -delete
echo "kernel=$out/vmlinuz"
echo "initrd=$out/initrd.cpio"
