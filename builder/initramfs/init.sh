#!/bin/busybox sh
# ossify initramfs /init: builder/initramfs/init.sh (its contract: init-script.ts).
bb=/bin/busybox
sys=/sys

# One line to every console: via the kernel log when /dev/kmsg is there, else /dev/console.
# Few lines go to kmsg, so its rate limit (10 per 5 s) cannot swallow the failure line.
say() {
	line="ossify-initramfs: $2"
	if [ -c /dev/kmsg ] && echo "<$1>$line" 2>/dev/null > /dev/kmsg; then
		return 0
	fi
	echo "$line" 2>/dev/null > /dev/console || echo "$line"
}

fail() {
	say 2 "$*; rebooting"
	$bb sleep 1
	$bb reboot -f
	echo b 2>/dev/null > /proc/sysrq-trigger
	# PID 1 must never exit or fall into a shell; wait for a watchdog or an operator.
	while :; do $bb sleep 3600; done
}

$bb mount -t proc -o nosuid,nodev,noexec proc /proc || fail "cannot mount /proc"
$bb mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fail "cannot mount /sys"
$bb mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || fail "cannot mount /dev"

# Load every module; report failures together, and only fail if the root cannot be found.
failed=
count=0
while read -r mod; do
	[ -n "$mod" ] || continue
	if err=$($bb insmod "$mod" 2>&1); then
		count=$((count + 1))
	else
		failed="$failed ${mod##*/} (${err##*: })"
	fi
done < /etc/ossify/modules
[ -z "$failed" ] || say 3 "modules that failed to load:$failed"

read -r cmdline < /proc/cmdline || fail "cannot read /proc/cmdline"
root=
slot=
wait=10
verity=
vsalt=
vblocks=
vhashoffset=
set -f
for arg in $cmdline; do
	case $arg in
	ossify.root=*) root=${arg#*=} ;;
	ossify.slot=*) slot=${arg#*=} ;;
	ossify.rootwait=*) wait=${arg#*=} ;;
	ossify.verity=*) verity=${arg#*=} ;;
	ossify.verity.salt=*) vsalt=${arg#*=} ;;
	ossify.verity.blocks=*) vblocks=${arg#*=} ;;
	ossify.verity.hashoffset=*) vhashoffset=${arg#*=} ;;
	esac
done
set +f
[ -n "$root" ] || fail "no ossify.root= on the kernel command line"
case $slot in
'' | a | b) ;;
*) fail "ossify.slot=$slot is not a or b" ;;
esac
case $wait in
'' | *[!0-9]*) fail "ossify.rootwait=$wait is not a whole number of seconds" ;;
esac

# ossify:include ../shell/partitions.sh

# Partitions appear asynchronously as their drivers probe: look until rootwait runs out.
# find_root [LABEL] sets found (the /dev paths, each after a space) and matches (how many).
find_root() {
	part_find "${1:-$root}"
	matches=$part_count
	found=
	for part in $part_devs; do
		found="$found /dev/$part"
	done
}
tries=$((wait * 10))
while :; do
	find_root
	[ "$matches" -eq 0 ] || break
	if [ "$tries" -le 0 ]; then
		fail "no partition labelled $root after ${wait}s (labels seen:${part_labels:- none}; modules loaded: $count${failed:+, failed:$failed})"
	fi
	tries=$((tries - 1))
	$bb usleep 100000
done
[ "$matches" -eq 1 ] || fail "$matches partitions are labelled $root:$found"
dev=${found# }

# The first of the named programs (from initramfs.programs) in the usual directories, in $found_tool.
tool() {
	found_tool=
	for t in "$@"; do
		for d in /sbin /usr/sbin /bin /usr/bin; do
			if [ -x "$d/$t" ]; then
				found_tool=$d/$t
				return 0
			fi
		done
	done
	return 1
}

# dm-verity: only the command line is trusted; the mapped device returns only blocks whose
# hashes chain up to the root hash, and any other block restarts the machine.
if [ -n "$verity" ]; then
	case $verity in
	*[!0-9a-f]*) fail "ossify.verity=$verity is not a lowercase hex root hash" ;;
	esac
	[ ${#verity} -eq 64 ] || fail "ossify.verity= is ${#verity} hex digits, a sha256 root hash has 64"
	case $vsalt in
	'') fail "ossify.verity= is set but ossify.verity.salt= is missing" ;;
	-) ;;
	*[!0-9a-f]*) fail "ossify.verity.salt=$vsalt is not lowercase hex" ;;
	esac
	case $vblocks in
	'' | *[!0-9]*) fail "ossify.verity.blocks=$vblocks is not a number of data blocks" ;;
	esac
	case $vhashoffset in
	'' | *[!0-9]*) fail "ossify.verity.hashoffset=$vhashoffset is not a byte offset" ;;
	esac
	[ "$vblocks" -gt 0 ] || fail "ossify.verity.blocks=0: no data to verify"
	[ $((vhashoffset % 4096)) -eq 0 ] || fail "ossify.verity.hashoffset=$vhashoffset is not a multiple of 4096"
	[ "$vhashoffset" -ge $((vblocks * 4096)) ] || fail "ossify.verity.hashoffset=$vhashoffset lies inside the $vblocks data blocks"
	mapper=
	tool dmsetup veritysetup && mapper=$found_tool
	[ -n "$mapper" ] || fail "ossify.verity= is set but this initramfs has no dmsetup (add it to initramfs.programs)"
	if [ "${mapper##*/}" = dmsetup ]; then
		set -- create root --readonly --table "0 $((vblocks * 8)) verity 1 $dev $dev 4096 4096 $vblocks $((vhashoffset / 4096 + 1)) sha256 $verity $vsalt 1 restart_on_corruption"
	else
		# No superblock read: the tree's first level is the block after it.
		set -- open "$dev" root "$dev" "$verity" --no-superblock --format=1 --hash=sha256 --data-block-size=4096 --hash-block-size=4096 \
			--data-blocks="$vblocks" --hash-offset=$((vhashoffset + 4096)) --salt="$vsalt" --restart-on-corruption
	fi
	if ! err=$(DM_DISABLE_UDEV=1 "$mapper" "$@" 2>&1); then
		fail "cannot map $root ($dev) with dm-verity: ${err%%
*}"
	fi
	[ -b /dev/mapper/root ] || fail "${mapper##*/} created no /dev/mapper/root for $root ($dev)"
	say 6 "root $root ($dev) is verified by dm-verity, root hash $verity"
	dev=/dev/mapper/root
fi

$bb mount -t squashfs -o ro "$dev" /newroot || fail "cannot mount $dev ($root) as squashfs"
[ -e /newroot/sbin/init ] || [ -L /newroot/sbin/init ] || fail "$root ($dev) has no /sbin/init"
for d in dev proc sys; do
	[ -d /newroot/$d ] || fail "$root ($dev) has no /$d directory"
done

# A full OS root (rootfs.os) names the writable mounts it needs in rootfs.env: tmpfs /run and
# /tmp, the image's /etc under a tmpfs overlay, /var under one or on STATE; then the site seed
# goes into /etc.
osenv=/newroot/usr/lib/ossify/rootfs.env
if [ -r "$osenv" ]; then
	OSSIFY_ETC=
	OSSIFY_VAR=
	OSSIFY_VAR_OFFSET=
	# KEY=value lines that ossify wrote (builder/rootfs/os.ts) into the root image: sourcing
	# trusts it no more than running its /sbin/init with every privilege a moment later does.
	# shellcheck disable=SC1090 # the file is the image's, not this script's
	. "$osenv"
	etc=$OSSIFY_ETC
	var=$OSSIFY_VAR
	varoffset=$OSSIFY_VAR_OFFSET
	$bb mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /newroot/run || fail "cannot mount a tmpfs on /run"
	$bb mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /newroot/tmp || fail "cannot mount a tmpfs on /tmp"
	overlay() {
		rw=/newroot/run/ossify/$1
		$bb mkdir -p "$rw/upper" "$rw/work"
		err=$($bb mount -t overlay -o "lowerdir=/newroot/$1,upperdir=$rw/upper,workdir=$rw/work" overlay "/newroot/$1" 2>&1) ||
			fail "cannot mount an overlay on /$1 (is the overlay module in kernel.modules?): ${err##*: }"
	}
	# rootfs.os.var: state: /var is the ext4 file system behind STATE's seed area, mapped with
	# dm-linear. The first boot makes it and fills it from the image's /var; from then on every
	# boot, upgrade and rollback mounts it as it is (the image's /var seeds it once, as in bootc).
	var_on_state() {
		find_root STATE
		[ "$matches" -eq 1 ] || fail "rootfs.os.var is state, but $matches partitions are labelled STATE"
		sdev=${found# }
		case $varoffset in
		'' | *[!0-9]*) fail "rootfs.env: OSSIFY_VAR_OFFSET=$varoffset is not a byte offset" ;;
		esac
		read -r ssize < "/sys/class/block/${sdev#/dev/}/size" || fail "cannot read the size of STATE ($sdev)"
		skip=$((varoffset / 512))
		[ "$ssize" -gt "$skip" ] || fail "STATE ($sdev) has no room for /var behind its seed area"
		tool dmsetup || fail "rootfs.os.var is state, but this initramfs has no dmsetup (add it to initramfs.programs)"
		err=$(DM_DISABLE_UDEV=1 "$found_tool" create var --table "0 $((ssize - skip)) linear $sdev $skip" 2>&1) ||
			fail "cannot map /var on STATE ($sdev): ${err%%
*}"
		vdev=/dev/mapper/var
		[ -b $vdev ] || fail "dmsetup created no $vdev for /var on STATE ($sdev)"
		# ext2/3/4's magic 0xEF53 at byte 1080 of the file system
		if [ "$($bb dd if=$vdev bs=1 skip=1080 count=2 2>/dev/null | $bb od -An -tx1 | $bb tr -d ' \n')" != 53ef ]; then
			tool mke2fs mkfs.ext4 || fail "rootfs.os.var is state, but this initramfs has no mke2fs (add e2fsprogs' sbin/mke2fs to initramfs.programs)"
			err=$("$found_tool" -q -F -t ext4 -L ossify-var -E nodiscard $vdev 2>&1) || fail "cannot make the /var file system on STATE ($sdev): ${err%%
*}"
			say 6 "made the /var file system on STATE ($sdev)"
		elif tool e2fsck; then
			"$found_tool" -p $vdev > /dev/null 2>&1
			rc=$?
			[ $rc -lt 4 ] || say 3 "e2fsck could not repair /var on STATE ($sdev) (exit $rc); mounting it as it is"
		fi
		$bb mkdir -p /var-state
		$bb mount -t ext4 -o nosuid,nodev $vdev /var-state || fail "cannot mount /var from STATE ($sdev)"
		if [ ! -e /var-state/lib/ossify/var-filled ]; then
			$bb cp -a /newroot/var/. /var-state/ || fail "cannot copy the image's /var to STATE ($sdev)"
			$bb mkdir -p /var-state/lib/ossify
			: > /var-state/lib/ossify/var-filled
			$bb sync
			say 6 "/var on STATE filled from the image"
		fi
		$bb mount --move /var-state /newroot/var || fail "cannot move /var from STATE onto the root"
	}
	case $etc in
	overlay) overlay etc ;;
	readonly) ;;
	*) fail "rootfs.env: OSSIFY_ETC=$etc is not overlay or readonly" ;;
	esac
	case $var in
	tmpfs) overlay var ;;
	state) var_on_state ;;
	*) fail "rootfs.env: OSSIFY_VAR=$var is not tmpfs or state" ;;
	esac
	# The site seed: a tar of etc/ files at the start of STATE, as the installer writes it.
	find_root STATE
	if [ "$matches" -eq 1 ] && [ "$($bb dd if="${found# }" bs=1 skip=257 count=5 2>/dev/null)" = ustar ]; then
		if [ "$etc" = overlay ]; then
			if $bb tar -xf "${found# }" -C /newroot; then
				say 6 "site data from STATE applied to /etc"
			else
				say 3 "site data from STATE could not be applied"
			fi
		else
			say 4 "site data on STATE not applied: /etc is read-only (rootfs.os.etc: readonly)"
		fi
	fi
fi

say 6 "root $root is $dev${slot:+ (slot $slot)}; $count modules loaded; starting /sbin/init"

case " $cmdline " in
*" panic="*) ;;
*) echo 10 2>/dev/null > /proc/sys/kernel/panic ;;
esac

for d in dev proc sys; do
	$bb mount --move /$d /newroot/$d || fail "cannot move /$d to $root"
done
exec $bb switch_root /newroot /sbin/init
