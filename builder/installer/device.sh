#!/bin/busybox sh
# ossify on-device installer: builder/installer/device.sh (its contract: device-script.ts).
# Constants from ossify's TypeScript (device-script.ts writes them):
# ossify:constants
set -u
root="${OSSIFY_ROOT:-}"
bb="${OSSIFY_BUSYBOX:-$root/bin/busybox}"
[ -x "$bb" ] || bb=/bin/busybox
payload="${OSSIFY_PAYLOAD:-$root/ossify/payload}"
proc="${OSSIFY_PROC:-/proc}"
sys="${OSSIFY_SYS:-/sys}"
dev="${OSSIFY_DEV:-/dev}"
release="$payload/release.json"
mounted=

say() { echo "ossify-install: $*" >&2; }
die() {
	say "$*"
	[ -z "$mounted" ] || $bb umount "$mounted" 2>/dev/null
	exit 1
}

usage() {
	$bb cat <<'USAGE'
ossify installer: this image carries one ossify release (its root image, vmlinuz,
initramfs.img, release.json; rootfs.verity and uki-a.efi, uki-b.efi when it was built
with dm-verity and unified kernel images; site.tar for a site of a fleet) in /ossify/payload.

Commands:
  upgrade [--tries N] [--replace-site]
                       write the release into the slot that is not running, verify it,
                       and make it boot next with N tries (default: the release's
                       boot.tries, else 3); a site release
                       also replaces the site data at the start of STATE
  site [--replace-site]
                       write only the site data (site.tar) to STATE; it applies at the
                       next boot. --replace-site: even over another site's data
  verify               check every payload file against release.json
  release              print release.json
  files                list the payload files
  help                 print this text
USAGE
}

# release.json is written one key per line (see encodeRelease), so sed can read it.
field() { $bb sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}$/\1/p" "$release" | $bb head -n 1; }
artifacts() { $bb sed -n 's/^    "\([^"]*\)": {"sha256": "\([a-f0-9]*\)", "size": \([0-9]*\)}.*/\1 \2 \3/p' "$release"; }
sha_of() { $bb sha256sum "$1" | $bb cut -d ' ' -f 1; }
# The boot record (release.json "boot", one key a line: see encodeReleaseBoot); empty for a release without one.
boot_record() { $bb sed -n '/^  "boot": {$/,/^  },\{0,1\}$/p' "$release"; }
# A key of the boot record as its JSON value; boot_string decodes a string (the record escapes only \" and \\).
boot_value() { boot_record | $bb sed -n "s/^    \"$1\": \(.*\)$/\1/p" | $bb sed 's/,$//' | $bb head -n 1; }
boot_string() { boot_value "$1" | $bb sed -e 's/^"\(.*\)"$/\1/' -e 's/\\\(.\)/\1/g'; }

verify_payload() {
	[ -r "$release" ] || die "$release is missing: not a complete ossify installer payload"
	for name in $rootfs vmlinuz initramfs.img; do
		artifacts | $bb grep -q "^$name " || die "release.json lists no $name"
	done
	# A here-document, not a pipe: die must end the script, not a subshell.
	while read -r name sha size; do
		f="$payload/$name"
		[ -f "$f" ] || die "payload file $name is missing"
		got=$($bb wc -c < "$f")
		[ "$got" -eq "$size" ] || die "$name is $got bytes, release.json says $size"
		[ "$(sha_of "$f")" = "$sha" ] || die "$name does not match its sha256 in release.json: digest mismatch"
	done <<ARTIFACTS
$(artifacts)
ARTIFACTS
}

# $arches has a line per architecture ossify knows (builder/arch.ts): its `uname -m`,
# systemd-boot's file name in the payload, the removable-media path the firmware starts,
# then its other names. arch_field ARCH N prints field N of ARCH's line, ARCH being any of
# its names; nothing for an architecture not in the table.
arch_field() {
	while read -r a_uname a_loader a_removable a_names; do
		for a in $a_uname $a_names; do
			[ "$a" = "$1" ] || continue
			case $2 in
			1) echo "$a_uname" ;;
			2) echo "$a_loader" ;;
			3) echo "$a_removable" ;;
			esac
			return 0
		done
	done <<ARCHES
$arches
ARCHES
}
norm_arch() {
	a_norm=$(arch_field "$1" 1)
	echo "${a_norm:-$1}"
}
efi_loader() { arch_field "$1" 2; }
efi_removable() { arch_field "$1" 3; }

# ossify:include ../shell/partitions.sh

# The device of the partition labelled $1; exactly one must exist.
part_dev() {
	part_find "$1"
	[ "$part_count" -eq 1 ] || die "$part_count partitions are labelled $1 (expected one)"
	echo "${part_devs# }"
}

is_mounted() { $bb grep -q "^$dev/$1 " "$proc/mounts" 2>/dev/null; }

flush_dev() {
	$bb sync
	$bb blockdev --flushbufs "$1" 2>/dev/null
	echo 3 2>/dev/null > "$proc/sys/vm/drop_caches"
}

# fleet: the site seed at the start of STATE (see builder/installer/site-seed.ts).
has_seed() { artifacts | $bb grep -q '^site.tar '; }
env_site() { $bb sed -n "s/^SITE_NAME='\(.*\)'$/\1/p" | $bb head -n 1; }
pending_block() { printf '%s\n' "$seed_marker" | $bb dd bs=512 count=1 conv=sync 2>/dev/null; }

# Checks the payload's seed and STATE before anything is written; $1 is non-empty for --replace-site.
check_seed() {
	seed="$payload/site.tar"
	seedsize=$($bb wc -c < "$seed")
	# shellcheck disable=SC2015 # die exits: it runs only when one of the two tests fails
	[ $((seedsize % 512)) -eq 0 ] && [ "$seedsize" -ge 1536 ] || die "site.tar is $seedsize bytes, not a tar archive of whole 512-byte blocks"
	[ "$($bb dd if="$seed" bs=1 skip=257 count=5 2>/dev/null)" = ustar ] || die "site.tar does not start with a ustar header: it is no site seed"
	statedev=$(part_dev STATE) || die "the payload carries site data (site.tar) for the STATE partition, but this disk has none"
	state="$dev/$statedev"
	is_mounted "$statedev" && die "STATE ($state) is mounted; refusing to write it"
	state_bytes=$(( $($bb cat "$sys/class/block/$statedev/size") * 512 ))
	# The seed area: STATE's first MiB (a persistent /var may follow it), or all of a smaller STATE.
	probe=$state_seed_area
	[ "$state_bytes" -lt "$probe" ] && probe=$state_bytes
	[ "$seedsize" -le "$probe" ] || die "site.tar ($seedsize bytes) does not fit the seed area of STATE ($probe bytes)"
	seedname=$($bb tar -xOf "$seed" "$site_env_path" 2>/dev/null | env_site)
	if [ "$($bb dd if="$state" bs=1 skip=257 count=5 2>/dev/null)" = ustar ]; then
		current=$($bb tar -xOf "$state" "$site_env_path" 2>/dev/null | env_site)
		if [ -n "$current" ] && [ -n "$seedname" ] && [ "$current" != "$seedname" ] && [ -z "$1" ]; then
			die "this disk holds the site data of $current, but the payload is site $seedname (--replace-site makes this machine $seedname)"
		fi
		say "site ${seedname:-(unnamed)}: replacing the site data of ${current:-an unnamed site}"
	elif pending_block | $bb cmp -s -n 512 "$state"; then
		say "site ${seedname:-(unnamed)}: finishing an interrupted site data write"
	elif $bb cmp -s -n "$probe" "$state" /dev/zero; then
		say "site ${seedname:-(unnamed)}: STATE has no site data yet"
	else
		die "STATE ($state) holds data that ossify did not write (no site seed, not zeros); writing the site data over it would destroy it"
	fi
}

# The pending marker over the first block, the rest behind it, then the seed's own first block.
write_seed() {
	if $bb cmp -s -n "$seedsize" "$seed" "$state"; then
		say "STATE already holds this site data (${seedname:-unnamed})"
		return
	fi
	pending_block | $bb dd of="$state" bs=512 count=1 conv=notrunc,fsync 2>/dev/null || die "writing STATE failed"
	flush_dev "$state"
	$bb dd if="$seed" of="$state" bs=512 skip=1 seek=1 conv=notrunc,fsync 2>/dev/null || die "writing the site data to STATE failed"
	flush_dev "$state"
	$bb cmp -s -n $((seedsize - 512)) "$seed" "$state" 512 512 || die "STATE reads back differently than the site data written to it"
	$bb dd if="$seed" of="$state" bs=512 count=1 conv=notrunc,fsync 2>/dev/null || die "writing the site data's first block to STATE failed"
	flush_dev "$state"
	$bb cmp -s -n "$seedsize" "$seed" "$state" || die "STATE reads back differently than the site data written to it"
	say "STATE: site ${seedname:-(unnamed)}, $seedsize bytes written and verified"
}

site() {
	replace=
	while [ $# -gt 0 ]; do
		case $1 in
		--replace-site) replace=1; shift ;;
		*) die "unknown option $1" ;;
		esac
	done
	verify_payload
	has_seed || die "this payload carries no site data (site.tar)"
	check_seed "$replace"
	write_seed
	say "the site data applies at the next boot"
}

# Copies $1 to $2 under a temporary name, checks it, renames it into place.
put() {
	$bb rm -f "$2$tmp_suffix"
	$bb cp "$1" "$2$tmp_suffix" || die "cannot write $2"
	$bb sync
	[ "$(sha_of "$2$tmp_suffix")" = "$(sha_of "$1")" ] || die "$2 reads back differently than it was written"
	$bb mv "$2$tmp_suffix" "$2" || die "cannot rename $2$tmp_suffix"
	$bb sync
}

# The ESP's shared boot files (systemd-boot, loader.conf, loader/keys/auto/*.auth), changed
# as builder/installer/boot-files.ts changes them: each file put whole, boot loaders first,
# loader.conf last; refused when a firmware enforcing Secure Boot could not follow.
u32() { $bb od -A n -t u4 -j "$2" -N 4 "$1" | $bb tr -d ' \n'; }
u16() { $bb od -A n -t u2 -j "$2" -N 2 "$1" | $bb tr -d ' \n'; }
hex_of() { $bb od -A n -v -t x1 | $bb tr -d ' \n'; }

# The certificate table (Authenticode signatures) of a PE image, as hex; nothing when unsigned.
pe_sigs() {
	[ -f "$1" ] && [ "$($bb head -c 2 "$1")" = MZ ] || return 0
	b_opt=$(($(u32 "$1" 60) + 24))
	case $(u16 "$1" "$b_opt") in
	523) b_dd=$((b_opt + 112)); b_n=$(u32 "$1" $((b_opt + 108))) ;;
	267) b_dd=$((b_opt + 96)); b_n=$(u32 "$1" $((b_opt + 92))) ;;
	*) return 0 ;;
	esac
	[ "${b_n:-0}" -gt 4 ] || return 0
	b_va=$(u32 "$1" $((b_dd + 32)))
	b_len=$(u32 "$1" $((b_dd + 36)))
	[ "${b_len:-0}" -gt 0 ] || return 0
	$bb tail -c +$((b_va + 1)) "$1" | $bb head -c "$b_len" | hex_of
}

# The certificate a .auth file enrols (after EFI_VARIABLE_AUTHENTICATION_2, the first entry of its EFI_SIGNATURE_LIST), as hex.
auth_cert() {
	b_esl=$((16 + $(u32 "$1" 16)))
	b_hdr=$(u32 "$1" $((b_esl + 20)))
	b_sz=$(u32 "$1" $((b_esl + 24)))
	$bb tail -c +$((b_esl + 28 + b_hdr + 16 + 1)) "$1" | $bb head -c $((b_sz - 16)) | hex_of
}

# Sets boot (the payload's boot files go onto the ESP) or dies, before anything is written.
boot_check() {
	boot=
	b_sd=$(efi_loader "$arch")
	b_rm=$(efi_removable "$arch")
	if [ -z "$b_sd" ] || ! artifacts | $bb grep -q "^$b_sd "; then
		say "the release carries no boot loader (an image made by an older ossify): the disk's systemd-boot and loader.conf stay as they are"
		return 0
	fi
	boot=1
	b_cert=
	if artifacts | $bb grep -q '^db.auth ' && $bb grep -qE '^secure-boot-enroll (force|manual)' "$payload/loader.conf"; then
		b_cert=$(auth_cert "$payload/db.auth")
	fi
	b_old=$(pe_sigs "$esp/$b_rm")
	if [ -n "$b_old" ]; then
		[ -n "$(pe_sigs "$payload/$b_sd")" ] || die "this disk's boot loader is signed for Secure Boot, but $name $version's is not: a firmware that enforces Secure Boot would refuse to start it, and neither slot would boot"
		if [ -z "$b_cert" ]; then
			boot=
			say "keeping this disk's signed boot loader: $name $version enrols no keys, so the key that signed its boot loader cannot be checked here (ossify upgrade checks it offline)"
			return 0
		fi
		case $b_old in
		*"$b_cert"*) ;;
		*) die "this disk's boot loader is signed by another key than the db key of $name $version: a firmware that enforces Secure Boot with this disk's keys would refuse to start the new one, and neither slot would boot" ;;
		esac
	elif [ -n "$b_cert" ]; then
		b_uki=
		for e in "$ukis/ossify-"*"-$active.efi" "$ukis/ossify-"*"-$active+"*.efi; do
			if [ -f "$e" ]; then
				b_uki=$e
				break
			fi
		done
		case $(pe_sigs "$b_uki") in
		*"$b_cert"*) ;;
		*) die "$name $version has systemd-boot enrol Secure Boot keys, but the running slot $active's entry is not signed by the db key it enrols: once the firmware enrols them it would refuse that slot, the one to fall back to" ;;
		esac
	fi
}

# Copies $1 over $2 (via put) unless $2 already holds the same bytes.
boot_put() {
	if [ -f "$2" ] && [ "$(sha_of "$1")" = "$(sha_of "$2")" ]; then return 0; fi
	$bb mkdir -p "${2%/*}" || die "cannot create ${2%/*} on the ESP"
	put "$1" "$2"
	say "boot files: ${2#"$esp"/}"
}

# The release's loader.conf with this disk's timeout line.
loader_conf() {
	if [ -n "$b_t" ]; then $bb sed "s/^timeout .*/timeout $b_t/" "$payload/loader.conf"; else $bb cat "$payload/loader.conf"; fi
}

boot_files() {
	[ -n "$boot" ] || return 0
	boot_put "$payload/$b_sd" "$esp/$b_rm"
	boot_put "$payload/$b_sd" "$esp/EFI/systemd/$b_sd"
	for k in PK KEK db; do
		if artifacts | $bb grep -q "^$k.auth "; then
			boot_put "$payload/$k.auth" "$esp/loader/keys/auto/$k.auth"
		elif [ -f "$esp/loader/keys/auto/$k.auth" ]; then
			$bb rm -f "$esp/loader/keys/auto/$k.auth" || die "cannot remove loader/keys/auto/$k.auth"
			$bb sync
		fi
	done
	b_conf="$esp/loader/loader.conf"
	b_t=
	[ -f "$b_conf" ] && b_t=$($bb sed -n 's/^timeout \([A-Za-z0-9-][A-Za-z0-9-]*\)[[:space:]]*$/\1/p' "$b_conf" | $bb head -n 1)
	b_sha=$(loader_conf | $bb sha256sum | $bb cut -d ' ' -f 1)
	[ -f "$b_conf" ] && [ "$(sha_of "$b_conf")" = "$b_sha" ] && return 0
	$bb mkdir -p "$esp/loader" || die "cannot create loader on the ESP"
	$bb rm -f "$b_conf$tmp_suffix"
	loader_conf > "$b_conf$tmp_suffix" || die "cannot write loader/loader.conf"
	$bb sync
	[ "$(sha_of "$b_conf$tmp_suffix")" = "$b_sha" ] || die "loader/loader.conf reads back differently than it was written"
	$bb mv "$b_conf$tmp_suffix" "$b_conf" || die "cannot rename loader/loader.conf into place"
	$bb sync
	say "boot files: loader/loader.conf"
}

upgrade() {
	tries=
	replace=
	while [ $# -gt 0 ]; do
		case $1 in
		--tries) tries=${2:-}; shift 2 || die "--tries needs a number" ;;
		--replace-site) replace=1; shift ;;
		*) die "unknown option $1" ;;
		esac
	done
	case $tries in '' | [1-9]) ;; *) die "--tries must be 1 to 9, not $tries" ;; esac

	verify_payload
	[ -n "$tries" ] || tries=$(boot_value tries)
	[ -n "$tries" ] || tries=3
	case $tries in [1-9]) ;; *) die "release.json's boot.tries must be 1 to 9, not $tries" ;; esac
	name=$(field name)
	version=$(field version)
	arch=$(field arch)
	# shellcheck disable=SC2015 # die exits: it runs only when one of the two tests fails
	[ -n "$name" ] && [ -n "$version" ] || die "release.json names no release"
	machine=${OSSIFY_MACHINE:-$($bb uname -m)}
	[ "$(norm_arch "$arch")" = "$(norm_arch "$machine")" ] || die "$name $version is built for $arch, this machine is $machine"

	active=
	set -f
	for w in $($bb cat "$proc/cmdline"); do
		case $w in ossify.slot=*) active=${w#ossify.slot=} ;; esac
	done
	set +f
	case $active in
	a) target=b ;;
	b) target=a ;;
	*) die "this system was not booted from an ossify slot (no ossify.slot= in $proc/cmdline)" ;;
	esac
	label=ROOT-$(echo "$target" | $bb tr ab AB)
	rootdev=$(part_dev "$label") || exit 1
	espdev=$(part_dev ESP) || exit 1
	is_mounted "$rootdev" && die "$label ($dev/$rootdev) is mounted; refusing to write it"
	slot_bytes=$(( $($bb cat "$sys/class/block/$rootdev/size") * 512 ))
	size=$(artifacts | $bb sed -n "s/^$rootfs [a-f0-9]* //p")
	sha=$(artifacts | $bb sed -n "s/^$rootfs \([a-f0-9]*\) .*/\1/p")
	[ "$size" -le "$slot_bytes" ] || die "$rootfs ($size bytes) does not fit $label ($slot_bytes bytes)"

	# dm-verity: the tree goes at the next 4 KiB after the squashfs; the entry pins its root.
	verity=
	if artifacts | $bb grep -q '^rootfs.verity '; then
		verity=$(field roothash)
		verity=${verity#sha256:}
		case $verity in
		*[!0-9a-f]* | '') die "the payload has rootfs.verity but release.json pins no roothash" ;;
		esac
		vtree="$payload/rootfs.verity"
		vsize=$($bb wc -c < "$vtree")
		vsha=$(sha_of "$vtree")
		vhashoffset=$(( (size + 4095) / 4096 * 4096 ))
		vblocks=$((vhashoffset / 4096))
		[ "$($bb head -c 8 "$vtree" | $bb od -v -A n -t x1 | $bb tr -d ' \n')" = 7665726974790000 ] || die "rootfs.verity has no verity superblock"
		sb_blocks=$($bb od -A n -t u8 -j 72 -N 8 "$vtree" | $bb tr -d ' \n')
		[ "$sb_blocks" = "$vblocks" ] || die "rootfs.verity covers $sb_blocks blocks, $rootfs has $vblocks"
		salt_len=$($bb od -A n -t u2 -j 80 -N 2 "$vtree" | $bb tr -d ' \n')
		vsalt=$($bb od -v -A n -t x1 -j 88 -N "$salt_len" "$vtree" | $bb tr -d ' \n')
		[ -n "$vsalt" ] || vsalt=-
		[ $((vhashoffset + vsize)) -le "$slot_bytes" ] || die "$rootfs and its verity tree ($((vhashoffset + vsize)) bytes) do not fit $label ($slot_bytes bytes)"
	fi
	uki=
	if artifacts | $bb grep -q '^uki-a.efi '; then
		artifacts | $bb grep -q '^uki-b.efi ' || die "the payload has uki-a.efi but not uki-b.efi"
		uki="$payload/uki-$target.efi"
	fi
	case "$(boot_string entries):$uki" in
	uki:) die "release.json says boot.entries uki, but the payload has no unified kernel images" ;;
	type1:?*) die "release.json says boot.entries type1, but the payload has unified kernel images" ;;
	esac

	# fleet: STATE is checked before anything is written (and before the ESP is mounted).
	seed=
	if has_seed; then check_seed "$replace"; fi

	esp=${OSSIFY_ESP_DIR:-}
	if [ -z "$esp" ]; then
		# shellcheck disable=SC2016 # awk's program, with awk's own $1 and $2
		esp=$($bb awk -v d="$dev/$espdev" '$1 == d { print $2; exit }' "$proc/mounts")
	fi
	if [ -z "$esp" ]; then
		esp=/run/ossify-esp
		$bb mkdir -p "$esp"
		$bb mount -t vfat -o rw "$dev/$espdev" "$esp" || die "cannot mount the ESP ($dev/$espdev)"
		mounted=$esp
	fi
	entries="$esp/loader/entries"
	ukis="$esp/EFI/Linux"
	[ -d "$entries" ] || [ -d "$ukis" ] || die "the ESP has neither loader/entries nor EFI/Linux: not an ossify disk"
	[ -n "$uki" ] || $bb mkdir -p "$entries"
	# One disk, one form of entry (see builder/installer/upgrade.ts).
	if [ -n "$uki" ]; then
		for e in "$entries"/ossify-*.conf; do
			[ -f "$e" ] && die "$name $version boots from unified kernel images, but this disk boots Type #1 entries ($e)"
		done
	else
		for e in "$ukis"/ossify-*.efi; do
			[ -f "$e" ] && die "$name $version boots from Type #1 entries, but this disk boots unified kernel images ($e)"
		done
	fi
	boot_check
	say "slot $active is running; writing $name $version to slot $target ($label, $dev/$rootdev)"

	# The release's kernel arguments; a release without a boot record keeps the running slot's (minus the ones naming the slot).
	opts=
	if [ -n "$(boot_record)" ]; then
		opts=$(boot_string cmdline)
	else
		for e in "$entries/ossify-$active.conf" "$entries/ossify-$active+"*.conf; do
			[ -f "$e" ] || continue
			opts=$($bb sed -n 's/^options //p' "$e" | $bb head -n 1)
			break
		done
		say "$name $version: release.json has no boot record (a release made by an older ossify): slot $target gets the kernel arguments of slot $active"
	fi
	extra=
	set -f
	for w in $opts; do
		case $w in ossify.slot=* | ossify.root=* | ossify.verity=* | ossify.verity.*=*) ;; *) extra="${extra:+$extra }$w" ;; esac
	done
	set +f

	# No entry for the target from here until the switch: nothing can boot it half-written.
	$bb rm -f "$entries/ossify-$target.conf" "$entries/ossify-$target+"*.conf "$entries/"*"$tmp_suffix" "$esp/ossify/$target/"*"$tmp_suffix"
	$bb rm -f "$ukis/ossify-"*"-$target.efi" "$ukis/ossify-"*"-$target+"*.efi "$ukis/"*"$tmp_suffix"
	$bb rm -f "$esp/ossify/$target/release.json"
	$bb sync

	$bb dd if="$payload/$rootfs" of="$dev/$rootdev" bs=1M conv=notrunc,fsync 2>/dev/null || die "writing $label failed"
	$bb sync
	$bb blockdev --flushbufs "$dev/$rootdev" 2>/dev/null
	echo 3 2>/dev/null > "$proc/sys/vm/drop_caches"
	got=$($bb head -c "$size" "$dev/$rootdev" | $bb sha256sum | $bb cut -d ' ' -f 1)
	[ "$got" = "$sha" ] || die "$label reads back as sha256 $got, $sha was written"
	if [ -n "$verity" ]; then
		# Zeros from the end of the squashfs to the tree (they are hashed), then the tree.
		if [ "$vhashoffset" -gt "$size" ]; then
			$bb dd if=/dev/zero of="$dev/$rootdev" bs=1 seek="$size" count=$((vhashoffset - size)) conv=notrunc,fsync 2>/dev/null || die "writing $label's verity padding failed"
		fi
		$bb dd if="$vtree" of="$dev/$rootdev" bs=4096 seek=$((vhashoffset / 4096)) conv=notrunc,fsync 2>/dev/null || die "writing $label's verity tree failed"
		$bb sync
		$bb blockdev --flushbufs "$dev/$rootdev" 2>/dev/null
		echo 3 2>/dev/null > "$proc/sys/vm/drop_caches"
		pad=$($bb dd if="$dev/$rootdev" bs=1 skip="$size" count=$((vhashoffset - size)) 2>/dev/null | $bb od -v -A n -t x1 | $bb tr -d ' 0\n')
		[ -z "$pad" ] || die "$label's verity padding reads back non-zero"
		got=$($bb dd if="$dev/$rootdev" bs=4096 skip=$((vhashoffset / 4096)) count=$(((vsize + 4095) / 4096)) 2>/dev/null | $bb head -c "$vsize" | $bb sha256sum | $bb cut -d ' ' -f 1)
		[ "$got" = "$vsha" ] || die "$label's verity tree reads back as sha256 $got, $vsha was written"
		say "$label verity tree written and verified (root $verity)"
	fi
	say "$label written and verified ($size bytes)"

	$bb mkdir -p "$esp/ossify/$target" || die "cannot create ossify/$target on the ESP"
	$bb rm -f "$esp/ossify/$target/vmlinuz" "$esp/ossify/$target/initrd.img"
	$bb sync
	if [ -z "$uki" ]; then
		put "$payload/vmlinuz" "$esp/ossify/$target/vmlinuz"
		put "$payload/initramfs.img" "$esp/ossify/$target/initrd.img"
	fi
	put "$release" "$esp/ossify/$target/release.json"
	boot_files
	[ -z "$seed" ] || write_seed

	gen=0
	for e in "$entries"/ossify-*.conf; do
		[ -f "$e" ] || continue
		g=$($bb sed -n 's/^version \([0-9][0-9]*\).*/\1/p' "$e" | $bb head -n 1)
		[ -n "$g" ] && [ "$g" -gt "$gen" ] && gen=$g
	done
	for e in "$ukis"/ossify-*.efi; do
		[ -f "$e" ] || continue
		g=${e##*/ossify-}
		g=${g%%-*}
		case $g in '' | *[!0-9]*) continue ;; esac
		[ "$g" -gt "$gen" ] && gen=$g
	done
	gen=$((gen + 1))
	if [ -n "$uki" ]; then
		# The slot's unified kernel image is the entry: its command line is inside (and signed).
		$bb mkdir -p "$ukis" || die "cannot create EFI/Linux on the ESP"
		entry="$ukis/ossify-$gen-$target+$tries.efi"
		$bb rm -f "$entry$tmp_suffix"
		$bb cp "$uki" "$entry$tmp_suffix" || die "cannot write the boot entry"
		$bb sync
		[ "$(sha_of "$entry$tmp_suffix")" = "$(sha_of "$uki")" ] || die "the boot entry reads back differently than it was written"
	else
		vopts=
		[ -z "$verity" ] || vopts=" ossify.verity=$verity ossify.verity.salt=$vsalt ossify.verity.blocks=$vblocks ossify.verity.hashoffset=$vhashoffset"
		entry="$entries/ossify-$target+$tries.conf"
		{
			echo "title $name $version (slot $target)"
			echo "sort-key $entry_sort_key"
			echo "version $gen-$version"
			echo "linux /ossify/$target/vmlinuz"
			echo "initrd /ossify/$target/initrd.img"
			echo "options ossify.slot=$target ossify.root=$label$vopts${extra:+ $extra}"
		} > "$entry$tmp_suffix" || die "cannot write the boot entry"
	fi
	$bb sync
	# The switch: one rename.
	$bb mv "$entry$tmp_suffix" "$entry" || die "cannot rename the boot entry into place"
	$bb sync
	[ -z "$mounted" ] || $bb umount "$mounted"
	mounted=
	say "slot $target boots next with $tries tries: $name $version (entry generation $gen)"
}

case "${1:-}" in
upgrade) shift; upgrade "$@" ;;
site) shift; site "$@" ;;
verify) verify_payload; say "payload verified" ;;
release) $bb cat "$release" ;;
files) $bb ls -l "$payload/" ;;
"" | help | -h | --help) usage ;;
*) say "unknown command: $1"; usage >&2; exit 2 ;;
esac
