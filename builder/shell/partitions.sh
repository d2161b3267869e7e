# Partitions by GPT label, as the kernel names them: PARTNAME= in $sys/class/block/*/uevent.
# part_find LABEL sets part_devs (the device names, each after a space), part_count (how
# many) and part_labels (every partition label seen, each after a space).
# (builder/shell/partitions.sh, shared by the initramfs /init and the on-device installer.)
part_find() {
	part_devs=
	part_count=0
	part_labels=
	for part_u in "$sys"/class/block/*/uevent; do
		[ -r "$part_u" ] || continue
		part_name=
		part_devname=
		while IFS='=' read -r part_k part_v; do
			case $part_k in
			PARTNAME) part_name=$part_v ;;
			DEVNAME) part_devname=$part_v ;;
			esac
		done < "$part_u"
		[ -n "$part_name" ] || continue
		part_labels="$part_labels $part_name"
		if [ "$part_name" = "$1" ] && [ -n "$part_devname" ]; then
			part_devs="$part_devs $part_devname"
			part_count=$((part_count + 1))
		fi
	done
}
