#!/bin/busybox sh
# ossify ISO installer /init: builder/iso/installer-init.sh (its contract: installer-init.ts).
bb=/bin/busybox
p=/ossify/install
hold=60
wait=10
target=
live=
written=

say() {
	echo "ossify-install: $*" 2>/dev/null > /dev/console
	[ -c /dev/tty0 ] && echo "ossify-install: $*" 2>/dev/null > /dev/tty0
}

# Refusals before anything is written, and failures after; both end powered off, never in a shell.
stop() {
	say "$*"
	if [ -z "$written" ]; then
		say "no disk was written"
	else
		say "the installation on $t did not complete: that disk does not boot; install again"
	fi
	say "powering off in $hold s"
	$bb sleep "$hold"
	$bb poweroff -f
	while :; do $bb sleep 3600; done
}

$bb mount -t proc -o nosuid,nodev,noexec proc /proc || stop "cannot mount /proc"
$bb mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || stop "cannot mount /sys"
$bb mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || stop "cannot mount /dev"
$bb mkdir -p /tmp

while read -r mod; do
	[ -n "$mod" ] && $bb insmod "$mod" 2>/dev/null
done < /etc/ossify/modules

read -r cmdline < /proc/cmdline
set -f
for arg in $cmdline; do
	case $arg in
	ossify.install=*) target=${arg#*=} ;;
	ossify.install.hold=*) hold=${arg#*=} ;;
	ossify.install.wait=*) wait=${arg#*=} ;;
	ossify.live=1) live=1 ;;
	esac
done
set +f
case $hold in '' | *[!0-9]*) hold=60 ;; esac
case $wait in '' | *[!0-9]*) wait=10 ;; esac

[ -r $p/release.env ] || stop "this installer carries no payload ($p/release.env is missing)"
# shellcheck disable=SC1091 # the payload's file, on the installation medium only
. "$p/release.env"

# No install target: the release boots from a tmpfs copy of /live (the ISO's live.img) and
# writes nothing; the marker tells its init that there is no slot to bless.
boot_live() {
	say "$*"
	say "booting $NAME $VERSION live from memory; nothing was written"
	[ -e /live/sbin/init ] || [ -L /live/sbin/init ] || stop "this installer carries no live root (/live/sbin/init is missing)"
	$bb mkdir -p /newroot
	$bb rm -rf $p
	$bb mount -t tmpfs -o mode=0755 tmpfs /newroot || stop "cannot mount a tmpfs for the live root"
	$bb cp -a /live/. /newroot/ || stop "cannot copy the live root to memory"
	$bb rm -rf /live
	$bb mkdir -p /newroot/dev /newroot/proc /newroot/sys /newroot/run/ossify
	: > /newroot/run/ossify/live
	for d in dev proc sys; do
		$bb mount --move /$d /newroot/$d || stop "cannot move /$d to the live root"
	done
	exec $bb switch_root /newroot /sbin/init
}
[ -z "$live" ] || boot_live "ossify.live=1: not installing"
say "installer for $NAME $VERSION: the disk layout needs $DISK_SIZE bytes ($((DISK_SIZE >> 20)) MiB)"

sectors() { $bb cat "/sys/block/$1/size"; }
# The installation medium (an ISO 9660 volume), wherever it sits.
is_medium() { [ "$($bb dd if="/dev/$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ]; }
is_empty() {
	s=$(sectors "$1")
	[ "$s" -ge 4096 ] || return 1
	$bb cmp -s -n 1048576 "/dev/$1" /dev/zero || return 1
	$bb dd if="/dev/$1" bs=512 skip=$((s - 2048)) count=2048 2>/dev/null | $bb cmp -s -n 1048576 - /dev/zero
}
disks() {
	for d in /sys/block/*; do
		n=${d##*/}
		case $n in loop* | ram* | sr* | zram* | dm-* | md* | fd* | nbd*) continue ;; esac
		[ "$($bb cat "$d/size" 2>/dev/null)" -gt 0 ] 2>/dev/null || continue
		echo "$n"
	done
}

# Disks appear as their drivers probe: wait for the chosen one, or for any disk.
n=
tries=$((wait * 5))
while :; do
	if [ -n "$target" ]; then
		n=${target#/dev/}
		[ -e "/sys/block/$n" ] && break
	else
		[ -n "$(disks)" ] && break
	fi
	[ "$tries" -gt 0 ] || break
	tries=$((tries - 1))
	$bb usleep 200000
done

if [ -n "$target" ]; then
	[ -e "/sys/block/$n" ] || stop "ossify.install=$target: no such disk (disks: $(disks | $bb tr '\n' ' ' | $bb sed 's/ $//'))"
	is_medium "$n" && stop "ossify.install=$target is the installation medium"
	t=/dev/$n
	bytes=$(($(sectors "$n") * 512))
	[ "$bytes" -ge "$DISK_SIZE" ] || stop "$t is too small: $bytes bytes ($((bytes >> 20)) MiB), $NAME $VERSION needs $DISK_SIZE bytes ($((DISK_SIZE >> 20)) MiB)"
	[ -z "$(is_empty "$n" || echo no)" ] || say "$t is not empty; ossify.install= chose it, so it is overwritten"
else
	t=
	small=
	seen=
	for n in $(disks); do
		seen="$seen $n"
		is_medium "$n" && continue
		is_empty "$n" || continue
		bytes=$(($(sectors "$n") * 512))
		if [ "$bytes" -lt "$DISK_SIZE" ]; then
			small="$small /dev/$n ($((bytes >> 20)) MiB)"
			continue
		fi
		t=/dev/$n
		break
	done
	if [ -z "$t" ]; then
		[ -n "$seen" ] || boot_live "no disk to install to: this machine shows no disk"
		[ -z "$small" ] || boot_live "no empty disk is large enough: $NAME $VERSION needs $DISK_SIZE bytes ($((DISK_SIZE >> 20)) MiB), the empty disks are$small"
		boot_live "no empty disk to install to (disks:$seen); boot with ossify.install=/dev/<disk> to overwrite one"
	fi
fi
[ "$($bb cat "/sys/block/$n/ro")" = 0 ] || stop "$t is read-only"
lbs=$($bb cat "/sys/block/$n/queue/logical_block_size" 2>/dev/null)
[ "${lbs:-512}" = 512 ] || stop "$t has $lbs-byte sectors; this layout is for 512-byte sectors"
for m in "/sys/block/$n/$n"*; do
	[ -e "$m" ] || continue
	$bb grep -q "^/dev/${m##*/} " /proc/mounts && stop "$t is in use (${m##*/} is mounted)"
done

[ "$($bb sha256sum $p/disk.data | $bb cut -d ' ' -f 1)" = "$DATA_SHA256" ] || stop "the payload (disk.data) does not match its sha256: the installation medium is damaged"
say "installing $NAME $VERSION to $t ($((bytes >> 20)) MiB)"
written=1
$bb dd if=/dev/zero of="$t" bs=512 count=2 conv=notrunc,fsync 2>/dev/null || stop "cannot write $t"
while read -r kind off count from; do
	case $kind in
	data) $bb dd if="$p/disk.data" of="$t" bs=65536 skip="$from" seek="$off" count="$count" conv=notrunc 2>/dev/null || stop "writing $t failed at block $off" ;;
	zero) $bb dd if=/dev/zero of="$t" bs=65536 seek="$off" count="$count" conv=notrunc 2>/dev/null || stop "writing $t failed at block $off" ;;
	esac
done < $p/disk.map
$bb sync
$bb blockdev --flushbufs "$t" 2>/dev/null
echo 3 2>/dev/null > /proc/sys/vm/drop_caches
# cmp would skip to an offset byte by byte: dd seeks, and the two sides' digests are compared.
same() { [ "$($bb dd if="$2" bs="$1" skip="$3" count="$6" 2>/dev/null | $bb sha256sum)" = "$($bb dd if="$4" bs="$1" skip="$5" count="$6" 2>/dev/null | $bb sha256sum)" ]; }
while read -r kind off count from; do
	[ "$kind" = data ] || continue
	same 65536 "$p/disk.data" "$from" "$t" "$off" "$count" || stop "$t reads back differently than written at block $off"
done < $p/disk.map
say "partitions written and verified"

# The GPT for this disk's size: only the headers' alternate and last-usable LBAs and their CRCs change.
last=$(($(sectors "$n") - 1))
le() {
	v=$1
	k=$2
	s=
	while [ "$k" -gt 0 ]; do
		s="$s\\$($bb printf %o $((v & 255)))"
		v=$((v >> 8))
		k=$((k - 1))
	done
	$bb printf "$s"
}
put_le() { le "$3" "$4" | $bb dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null; }
crc32() {
	c=4294967295
	for b in $($bb od -A n -v -t u1 -N 92 "$1"); do
		c=$((c ^ b))
		# shellcheck disable=SC2034 # i only counts the eight rounds, one per bit
		for i in 1 2 3 4 5 6 7 8; do c=$(((c >> 1) ^ (3988292384 & -(c & 1)))); done
	done
	echo $((c ^ 4294967295))
}
header() {
	$bb cp $p/gpt.hdr "$1"
	put_le "$1" 24 "$2" 8
	put_le "$1" 32 "$3" 8
	put_le "$1" 48 $((last - 33)) 8
	put_le "$1" 72 "$4" 8
	put_le "$1" 16 0 4
	put_le "$1" 16 "$(crc32 "$1")" 4
}
header /tmp/primary 1 $last 2
header /tmp/backup $last 1 $((last - 32))
$bb cp $p/mbr.bin /tmp/mbr
mbr_size=$last
[ "$mbr_size" -le 4294967295 ] || mbr_size=4294967295
put_le /tmp/mbr 458 $mbr_size 4
$bb dd if="$p/gpt.ent" of="$t" bs=512 seek=$((last - 32)) conv=notrunc 2>/dev/null || stop "writing the backup partition table failed"
$bb dd if=/tmp/backup of="$t" bs=512 seek="$last" count=1 conv=notrunc 2>/dev/null || stop "writing the backup partition table failed"
$bb sync
$bb dd if=/tmp/primary of="$t" bs=512 seek=1 count=1 conv=notrunc 2>/dev/null || stop "writing the partition table failed"
$bb dd if=/tmp/mbr of="$t" bs=512 count=1 conv=notrunc 2>/dev/null || stop "writing the protective MBR failed"
$bb sync
$bb blockdev --flushbufs "$t" 2>/dev/null
echo 3 2>/dev/null > /proc/sys/vm/drop_caches
# shellcheck disable=SC2015 # stop never returns: it runs only when a comparison fails
same 512 /tmp/mbr 0 "$t" 0 1 && same 512 /tmp/primary 0 "$t" 1 1 && same 512 /tmp/backup 0 "$t" "$last" 1 && same 512 "$p/gpt.ent" 0 "$t" $((last - 32)) 32 \
	|| stop "the partition table on $t reads back differently than written"

# The kernel must find the layout's partitions by label, as the release's initramfs will.
$bb blockdev --rereadpt "$t" 2>/dev/null || stop "the kernel cannot re-read the partition table of $t"
for label in $LABELS; do
	found=
	for u in "/sys/block/$n/$n"*/uevent; do
		[ -r "$u" ] && $bb grep -qx "PARTNAME=$label" "$u" && found=1
	done
	[ -n "$found" ] || stop "the kernel sees no partition $label on $t after the install"
done
say "installed $NAME $VERSION on $t (partitions: $LABELS); rebooting into slot A"
$bb sync
$bb sleep 1
$bb reboot -f
while :; do $bb sleep 3600; done
