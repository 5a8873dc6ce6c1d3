#!/bin/sh
# /init of the VM harness's guest (busybox sh, PID 1). Boots to a shell-less chain of steps
# that drive the kernel NBD client, LVM, ext4 and fio against a meshblock volume, then powers
# off. build-guest.sh puts it in the base initramfs; run-guest.mjs appends the per-run
# settings (/etc/meshblock-run.conf) and the lvm.conf in force (/etc/lvm/lvm.conf).
#
# The host reads the serial console. Each step prints exactly one line
#   MBVM <step> ok [detail]        or        MBVM <step> fail <reason>
# (a failing step prints its command's output first), events print `MBVM <event>`, and the
# run ends with `MBVM done ok` or `MBVM done fail`. The first failed step ends the chain:
# every later step depends on it. Lines starting with "mbvm:" say which step is running, for
# a run that hangs.
#
# Scenarios (MBVM_SCENARIO):
#   chain     connect; PV, VG, two LVs; ext4 with checksummed files; unmount, deactivate,
#             disconnect, reconnect, activate, fsck, verify; fio with crc32c verify (random 4k
#             depth 8, sequential 1M); then the XenServer flavour (VG_XenStorage-<uuid>).
#   fio-long  connect; fio on the raw device for MBVM_FIO_SECONDS with continuous verify,
#             printing `MBVM fio-started` once writes reach the device (the host injects its
#             fault then); a final read-verify of the whole area; no NBD error in dmesg.
#   attach-mapped
#             meshblock's runtime bundle (run-guest.mjs puts it at /opt/meshblock) runs the SDC
#             here: `sdc start --attach-mapped` registers with the MDM at MBVM_MDM as
#             MBVM_SDC_NAME (cluster MBVM_CLUSTER_ID, secret /etc/meshblock/cluster.secret);
#             `MBVM sdc-ready` tells the host to map MBVM_EXPORT to it; the SDC itself attaches
#             it (no nbd-client here): /dev/nbd0 and its /dev/disk/by-id names appear; LVM
#             on the emc-vol name, ext4, checksums; fio-long as above (the host kills an SDS);
#             `MBVM unmap-now` tells the host to unmap; the SDC detaches: size 0, names gone.
#
# nbd-client options (kept the same as `meshblock attach`'s defaults, src/hostsetup):
#   -N EXPORT  the export is the volume's name
#   -b 4096    4 KiB logical blocks, the unit ext4, LVM and the SDC work in; no 512-byte
#              read-modify-write anywhere
#   -t 30      a request unanswered for 30 s fails: the SDC fails over in a few seconds when
#              an SDS dies, well inside it, and a dead server fails the step instead of
#              hanging the guest
#   -C N       MBVM_CONNECTIONS, default 1 (see run-guest.mjs --connections)
#   netlink    (nbd-client's default) configures the device and exits; `nbd-client -d`
#              disconnects. No -persist: the SDC stays up in every scenario here.

export PATH=/usr/sbin:/usr/bin
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 run /run
mkdir -p /run/lvm /run/lock/lvm /mnt/fs
# Kernel messages of level error and worse still reach the console (between our lines);
# warnings would only clutter it. dmesg keeps everything.
echo 4 >/proc/sys/kernel/printk

MBVM_HOST=10.0.2.100
MBVM_PORT=10809
MBVM_EXPORT=vol1
MBVM_SCENARIO=chain
MBVM_CONNECTIONS=1
MBVM_FIO_SECONDS=40
# Sizes measured to keep each fio step around 10-20 s under TCG on two busy cores (random 4 KiB
# writes run at ~150-350 IOPS there, sequential 1 MiB at ~6-20 MiB/s). The fio LV is
# MBVM_FIO_SEQ_SIZE large, so MBVM_FIO_RAND_SIZE must not exceed it.
MBVM_FIO_LONG_SIZE=32M
MBVM_FIO_RAND_SIZE=16M
MBVM_FIO_SEQ_SIZE=64M
MBVM_LVM_CONF_SHA256=
MBVM_MDM=
MBVM_SDC_NAME=guest
MBVM_CLUSTER_ID=
[ -f /etc/meshblock-run.conf ] && . /etc/meshblock-run.conf

OUT=/tmp/step.out
FAILED=0
DETAIL=

# step NAME FUNCTION [ARGS...]: runs FUNCTION in this shell (so it can set DETAIL) with its
# output in $OUT, and prints the step's one line.
step() {
  local name rc
  name=$1
  shift
  [ "$FAILED" = 0 ] || return 1
  echo "mbvm: running $name"
  DETAIL=
  "$@" >"$OUT" 2>&1
  rc=$?
  if [ "$rc" = 0 ]; then
    echo "MBVM $name ok${DETAIL:+ $DETAIL}"
  else
    echo "--- output of $name (exit $rc) ---"
    tail -n 60 "$OUT"
    echo "--- kernel log, last lines ---"
    dmesg | tail -n 25
    echo "--- end ---"
    echo "MBVM $name fail ${DETAIL:-exit $rc}"
    FAILED=1
  fi
  return "$rc"
}

finish() {
  sync
  if [ "$FAILED" = 0 ]; then echo "MBVM done ok"; else echo "MBVM done fail"; fi
  poweroff -f
  sleep 60
}

# Runs "$@" and, when it fails, says which command in DETAIL.
must() {
  "$@" && return 0
  rc=$?
  DETAIL="exit $rc: $*"
  return "$rc"
}

# --- steps -------------------------------------------------------------------------------

do_boot() {
  DETAIL="$(uname -r) $(nproc) cpus $(awk '/MemTotal/ { print int($2 / 1024) "MiB" }' /proc/meminfo)"
}

do_modules() {
  must modprobe -a virtio_pci virtio_net crc32c_generic ext4 dm-mod || return
  # The guest uses nbd0 only; two devices instead of the default 16 are less to set up.
  must modprobe nbd nbds_max=2 || return
  DETAIL="nbd dm-mod ext4 virtio_net"
}

do_net() {
  n=0
  while [ ! -e /sys/class/net/eth0 ]; do
    n=$((n + 1))
    [ "$n" -gt 100 ] && { DETAIL="no eth0 after 10 s"; return 1; }
    sleep 0.1
  done
  must ip link set lo up || return
  must ip link set eth0 up || return
  must ip addr add 10.0.2.15/24 dev eth0 || return
  must ip route add default via 10.0.2.2 || return
  DETAIL="eth0 10.0.2.15/24 via 10.0.2.2"
}

nbd_connect() {
  set -- "$MBVM_HOST" "$MBVM_PORT" /dev/nbd0 -N "$MBVM_EXPORT" -b 4096 -t 30
  [ "$MBVM_CONNECTIONS" -gt 1 ] && set -- "$@" -C "$MBVM_CONNECTIONS"
  line="nbd-client $*"
  echo "$line"
  must nbd-client "$@" || return
  n=0
  while [ "$(cat /sys/block/nbd0/size)" = 0 ]; do
    n=$((n + 1))
    [ "$n" -gt 100 ] && { DETAIL="/dev/nbd0 has no size 10 s after nbd-client"; return 1; }
    sleep 0.1
  done
  DETAIL="/dev/nbd0 $(($(cat /sys/block/nbd0/size) * 512)) bytes, block $(cat /sys/block/nbd0/queue/logical_block_size), $MBVM_CONNECTIONS connection(s) by: $line"
}

nbd_disconnect() {
  must nbd-client -d /dev/nbd0 || return
  n=0
  while [ "$(cat /sys/block/nbd0/size)" != 0 ]; do
    n=$((n + 1))
    [ "$n" -gt 100 ] && { DETAIL="/dev/nbd0 still sized 10 s after nbd-client -d"; return 1; }
    sleep 0.1
  done
  DETAIL="/dev/nbd0"
}

do_pvcreate() {
  must pvcreate /dev/nbd0 || return
  DETAIL="/dev/nbd0"
}

do_vgcreate() {
  must vgcreate mbvm /dev/nbd0 || return
  DETAIL="mbvm"
}

do_lvcreate() {
  must lvcreate -y -n fs -L 128M mbvm || return
  must lvcreate -y -n fio -L "$MBVM_FIO_SEQ_SIZE" mbvm || return
  DETAIL="$(lvs --noheadings --separator , -o lv_name,lv_size mbvm | tr -d ' ' | tr '\n' ' ')"
}

# The lvm.conf in force must be the one the host sent (byte for byte), valid, and its filter
# and types are shown.
do_lvmconfig() {
  sum=$(sha256sum /etc/lvm/lvm.conf | cut -d' ' -f1)
  if [ -n "$MBVM_LVM_CONF_SHA256" ] && [ "$sum" != "$MBVM_LVM_CONF_SHA256" ]; then
    DETAIL="/etc/lvm/lvm.conf is $sum, not the $MBVM_LVM_CONF_SHA256 the host sent"
    return 1
  fi
  must lvmconfig --validate || return
  # `full`: the value in force, the file's or LVM's default; types has no default.
  settings=
  for key in devices/filter devices/global_filter devices/types devices/use_devicesfile devices/obtain_device_list_from_udev activation/udev_sync activation/udev_rules; do
    value=$(lvmconfig --typeconfig full "$key" 2>/dev/null) || value=
    [ -n "$value" ] || value="${key#*/}=<unset>"
    settings="$settings $value"
  done
  DETAIL="sha256=$(echo "$sum" | cut -c1-16)$settings"
}

do_mkfs() {
  must mkfs.ext4 -q -F /dev/mbvm/fs || return
  DETAIL="ext4 on /dev/mbvm/fs"
}

do_mount() {
  must mount -t ext4 /dev/mbvm/fs /mnt/fs || return
  DETAIL="/mnt/fs"
}

do_write() {
  total=0
  for i in 1 2 3 4 5; do
    # Sizes not a multiple of the block size, the largest spanning many extents.
    size=$((i * i * 300 * 1024 + i * 777))
    must head -c "$size" /dev/urandom >"/mnt/fs/file$i" || return
    total=$((total + size))
  done
  mkdir -p /mnt/fs/dir/sub
  must head -c 65536 /dev/urandom >/mnt/fs/dir/sub/small || return
  total=$((total + 65536))
  (cd /mnt/fs && find . -type f ! -path './lost+found/*' | sort | xargs sha256sum) >/tmp/sums || return
  sync
  DETAIL="$(wc -l </tmp/sums) files $total bytes"
}

do_umount() {
  must umount /mnt/fs || return
  DETAIL="/mnt/fs"
}

do_deactivate() {
  must vgchange -an mbvm || return
  [ ! -e /dev/mapper/mbvm-fs ] || { DETAIL="/dev/mapper/mbvm-fs still there"; return 1; }
  DETAIL="mbvm"
}

do_activate() {
  # What the kernel cached of the device is gone with the disconnect; drop the rest too,
  # so that everything below is read from the volume.
  echo 3 >/proc/sys/vm/drop_caches
  must vgchange -ay mbvm || return
  DETAIL="$(lvs --noheadings --separator , -o lv_name,lv_attr mbvm | tr -d ' ' | tr '\n' ' ')"
}

do_fsck() {
  must e2fsck -fn /dev/mbvm/fs || return
  DETAIL="clean"
}

do_verify() {
  (cd /mnt/fs && sha256sum -c /tmp/sums) || { DETAIL="checksum mismatch"; return 1; }
  DETAIL="$(wc -l </tmp/sums) of $(wc -l </tmp/sums) checksums match"
}

# fio's terse output (version 3): field 5 is the error; 7/8 read KiB/s and IOPS, 39 the
# longest read (usec); 48/49 write KiB/s and IOPS, 80 the longest write (the read side of a
# write job is its verify pass). WHAT: write, read or both.
fio_summary() {
  awk -F';' -v what="$2" '$1 == 3 {
    w = sprintf("write %d KiB/s %d IOPS max %d ms", $48, $49, $80 / 1000)
    r = sprintf("%s %d KiB/s %d IOPS max %d ms", what == "both" ? "verify read" : "read", $7, $8, $39 / 1000)
    print what == "write" ? w : what == "read" ? r : w ", " r
  }' "$1"
}

run_fio() { # NAME FILE SUMMARY(write|read|both) fio-args...
  local name file what rc
  name=$1
  file=$2
  what=$3
  shift 3
  fio --name="$name" --filename="$file" --ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 \
    --verify_state_save=0 --output-format=terse "$@" >/tmp/fio.out 2>&1
  rc=$?
  if [ "$rc" != 0 ]; then
    cat /tmp/fio.out
    DETAIL="fio exit $rc: $(grep -m1 -iE 'verify|err=' /tmp/fio.out)"
    return "$rc"
  fi
  DETAIL="$(fio_summary /tmp/fio.out "$what")"
}

do_fio_rand4k() {
  run_fio rand4k /dev/mbvm/fio both --rw=randwrite --bs=4k --iodepth=8 --size="$MBVM_FIO_RAND_SIZE" --do_verify=1
}

do_fio_seq1m() {
  run_fio seq1m /dev/mbvm/fio both --rw=write --bs=1M --iodepth=8 --size="$MBVM_FIO_SEQ_SIZE" --do_verify=1
}

# XenServer's LVM SR on the same device: the chain's VG goes first, as when an administrator
# turns a scratch LUN into an SR (an SR owns its whole device), so one export and one
# /dev/nbd0 are enough.
do_xen_vgremove() {
  must vgchange -an mbvm || return
  must vgremove -f mbvm || return
  must pvremove /dev/nbd0 || return
  DETAIL="mbvm removed"
}

XEN_UUID=
do_xen_vgcreate() {
  XEN_UUID=$(cat /proc/sys/kernel/random/uuid)
  # As XenServer's LVHD SR does: the whole device is the PV, with a large metadata area.
  must pvcreate --metadatasize 10M /dev/nbd0 || return
  must vgcreate "VG_XenStorage-$XEN_UUID" /dev/nbd0 || return
  DETAIL="VG_XenStorage-$XEN_UUID"
}

do_xen_lvcreate() {
  vhd=$(cat /proc/sys/kernel/random/uuid)
  must lvcreate -y -n MGT -L 4M "VG_XenStorage-$XEN_UUID" || return
  must lvcreate -y -n "VHD-$vhd" -L 64M "VG_XenStorage-$XEN_UUID" || return
  must dd if=/dev/urandom of="/dev/VG_XenStorage-$XEN_UUID/VHD-$vhd" bs=1M count=4 conv=fsync || return
  DETAIL="MGT VHD-$vhd"
}

do_xen_vgs() {
  must vgs --noheadings -o vg_name,pv_name,lv_count "VG_XenStorage-$XEN_UUID" || return
  DETAIL="$(vgs --noheadings --separator , -o vg_name,pv_name,lv_count "VG_XenStorage-$XEN_UUID" | tr -d ' ')"
}

# The SR's VG and PV labels go too, so that the volume can take the chain again (a second
# run against the same lab volume would otherwise stop at pvcreate, rightly refusing a PV
# that belongs to a VG).
do_cleanup() {
  if [ -n "$XEN_UUID" ]; then
    must vgchange -an "VG_XenStorage-$XEN_UUID" || return
    must vgremove -f "VG_XenStorage-$XEN_UUID" || return
    must pvremove /dev/nbd0 || return
  fi
  nbd_disconnect || return
  DETAIL="VG_XenStorage-$XEN_UUID deactivated and removed, /dev/nbd0 disconnected"
}

# Kernel complaints about the NBD device: IO errors, timeouts, dead connections.
nbd_kernel_errors() {
  dmesg | grep -E 'nbd[0-9]' | grep -iE 'I/O error|error|timed out|dead|failed'
}

do_kernel_log() {
  if nbd_kernel_errors >/tmp/kerr; then
    cat /tmp/kerr
    DETAIL="$(wc -l </tmp/kerr) NBD error lines in dmesg, first: $(head -n1 /tmp/kerr)"
    return 1
  fi
  DETAIL="no NBD errors"
}

# Every 4 KiB block of the area gets a verify header first (1 MiB writes, a header every
# 4 KiB), so that the final read-verify can check blocks fio-long never reached.
do_fio_prefill() {
  run_fio prefill /dev/nbd0 write --rw=write --bs=1M --verify_interval=4k --iodepth=8 --size="$MBVM_FIO_LONG_SIZE" --do_verify=0
}

# Random 4k writes for MBVM_FIO_SECONDS with every write read back and checked shortly after
# (verify_backlog): IO that goes astray while the host kills an SDS fails here.
do_fio_long() {
  fio --name=long --filename=/dev/nbd0 --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=8 --size="$MBVM_FIO_LONG_SIZE" --time_based --runtime="$MBVM_FIO_SECONDS" \
    --verify=crc32c --verify_fatal=1 --verify_backlog=256 --verify_state_save=0 \
    --output-format=terse >/tmp/fio.out 2>&1 &
  pid=$!
  before=$(awk '{ print $5 }' /sys/block/nbd0/stat)
  n=0
  while [ "$(awk '{ print $5 }' /sys/block/nbd0/stat)" = "$before" ]; do
    n=$((n + 1))
    if [ "$n" -gt 300 ] || ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      cat /tmp/fio.out
      DETAIL="fio wrote nothing to /dev/nbd0 within 30 s"
      return 1
    fi
    sleep 0.1
  done
  # Straight to the console, not into the step's output: the host waits for it.
  echo "MBVM fio-started" >/dev/console
  wait "$pid"
  rc=$?
  if [ "$rc" != 0 ]; then
    cat /tmp/fio.out
    DETAIL="fio exit $rc: $(grep -m1 -iE 'verify|err=' /tmp/fio.out)"
    return "$rc"
  fi
  DETAIL="$MBVM_FIO_SECONDS s, $(fio_summary /tmp/fio.out write)"
}

# Every block of the area read back and checked (offset and crc32c in each block's header).
do_fio_final_verify() {
  run_fio final /dev/nbd0 read --rw=read --bs=4k --iodepth=8 --size="$MBVM_FIO_LONG_SIZE"
}

# --- attach-mapped: the SDC from the runtime bundle attaches what is mapped -------------

MESHBLOCK=/opt/meshblock/bin/meshblock

do_bundle() {
  must "$MESHBLOCK" --version >/tmp/version || return
  DETAIL="$(cat /tmp/version) from /opt/meshblock"
}

# Waits up to $1 tenths of a second for the command "$2..." to succeed.
wait_for() {
  local limit n
  limit=$1
  shift
  n=0
  until "$@"; do
    n=$((n + 1))
    [ "$n" -gt "$limit" ] && return 1
    sleep 0.1
  done
}

sdc_serving() { grep -q 'serving NBD on' /tmp/sdc.out; }

do_sdc_start() {
  mkdir -p /var/lib/meshblock/sdc
  "$MESHBLOCK" sdc start --mdm "$MBVM_MDM" --name "$MBVM_SDC_NAME" --cluster-id "$MBVM_CLUSTER_ID" \
    --secret-file /etc/meshblock/cluster.secret --data-dir /var/lib/meshblock/sdc --attach-mapped \
    >/tmp/sdc.out 2>/tmp/sdc.log &
  SDC_PID=$!
  # Node under TCG starts in tens of seconds.
  if ! wait_for 1800 sdc_serving; then
    tail -n 30 /tmp/sdc.log
    DETAIL="the SDC did not say it serves within 180 s"
    return 1
  fi
  echo "MBVM sdc-ready" >/dev/console
  DETAIL="$(cat /tmp/sdc.out)"
}

emc_name() { ls /dev/disk/by-id 2>/dev/null | grep '^emc-vol-' | head -n1; }
attached() { [ -n "$(emc_name)" ] && [ "$(cat /sys/block/nbd0/size)" != 0 ]; }

do_attached() {
  if ! wait_for 1800 attached; then
    tail -n 30 /tmp/sdc.log
    DETAIL="no /dev/disk/by-id/emc-vol-* and sized /dev/nbd0 within 180 s of sdc-ready"
    return 1
  fi
  # Not `name`: step() reads its own after this returns (busybox's local is dynamically scoped).
  names=
  for link in $(ls /dev/disk/by-id); do names="$names $link=$(readlink "/dev/disk/by-id/$link")"; done
  DETAIL="/dev/nbd0 $(($(cat /sys/block/nbd0/size) * 512)) bytes;$names"
}

do_pvcreate_byid() {
  must pvcreate "/dev/disk/by-id/$(emc_name)" || return
  DETAIL="/dev/disk/by-id/$(emc_name)"
}

do_lvcreate_fs() {
  must lvcreate -y -n fs -L 128M mbvm || return
  DETAIL="mbvm/fs"
}

do_vgremove() {
  must vgchange -an mbvm || return
  must vgremove -f mbvm || return
  must pvremove /dev/nbd0 || return
  DETAIL="mbvm removed"
}

detached() { [ "$(cat /sys/block/nbd0/size)" = 0 ] && [ -z "$(ls /dev/disk/by-id 2>/dev/null)" ]; }

do_detached() {
  echo "MBVM unmap-now" >/dev/console
  if ! wait_for 1800 detached; then
    tail -n 30 /tmp/sdc.log
    DETAIL="/dev/nbd0 still sized or names left 180 s after unmap-now: $(ls /dev/disk/by-id)"
    return 1
  fi
  DETAIL="/dev/nbd0 size 0, /dev/disk/by-id empty"
}

do_sdc_stop() {
  kill -TERM "$SDC_PID"
  wait "$SDC_PID"
  rc=$?
  grep -E '"level":(50|60)' /tmp/sdc.log | head -n 5
  [ "$rc" = 0 ] || { DETAIL="the SDC exited $rc"; return 1; }
  # grep -c exits 1 when it counts none: the step's status is this assignment's.
  errors=$(grep -c '"level":50' /tmp/sdc.log || true)
  DETAIL="exit 0, $errors error lines in its log"
}

# --- the scenarios -------------------------------------------------------------------------

step boot do_boot
step modules do_modules
step net do_net

case "$MBVM_SCENARIO" in
chain)
  step connect nbd_connect
  step pvcreate do_pvcreate
  step vgcreate do_vgcreate
  step lvcreate do_lvcreate
  step lvmconfig do_lvmconfig
  step mkfs do_mkfs
  step mount do_mount
  step write do_write
  step umount do_umount
  step deactivate do_deactivate
  step disconnect nbd_disconnect
  step reconnect nbd_connect
  step activate do_activate
  step fsck do_fsck
  step remount do_mount
  step verify do_verify
  step umount-verified do_umount
  step fio-rand4k do_fio_rand4k
  step fio-seq1m do_fio_seq1m
  step xen-vgremove do_xen_vgremove
  step xen-vgcreate do_xen_vgcreate
  step xen-lvcreate do_xen_lvcreate
  step xen-vgs do_xen_vgs
  step cleanup do_cleanup
  step kernel-log do_kernel_log
  ;;
fio-long)
  step connect nbd_connect
  step fio-prefill do_fio_prefill
  step fio-long do_fio_long
  step fio-final-verify do_fio_final_verify
  step kernel-log do_kernel_log
  step disconnect nbd_disconnect
  ;;
attach-mapped)
  step bundle do_bundle
  step sdc-start do_sdc_start
  step attached do_attached
  step pvcreate do_pvcreate_byid
  step vgcreate do_vgcreate
  step lvcreate do_lvcreate_fs
  step mkfs do_mkfs
  step mount do_mount
  step write do_write
  step umount do_umount
  step deactivate do_deactivate
  step activate do_activate
  step fsck do_fsck
  step remount do_mount
  step verify do_verify
  step umount-verified do_umount
  step vgremove do_vgremove
  step fio-prefill do_fio_prefill
  step fio-long do_fio_long
  step fio-final-verify do_fio_final_verify
  step kernel-log do_kernel_log
  step detached do_detached
  step sdc-stop do_sdc_stop
  ;;
boot)
  # Only boots, loads modules and brings the network up: for developing the harness.
  ;;
*)
  DETAIL="unknown scenario $MBVM_SCENARIO"
  echo "MBVM scenario fail unknown scenario $MBVM_SCENARIO"
  FAILED=1
  ;;
esac
finish
