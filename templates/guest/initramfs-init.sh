#!/bin/sh
# vmlab initramfs /init: load the virtio modules, wait for the root disk,
# mount it and switch_root to its /sbin/init. Written by `vmlab image build`.
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "vmlab initramfs: $*" >/dev/console
	echo "vmlab initramfs: dropping to a shell" >/dev/console
	exec setsid cttyhack sh </dev/console >/dev/console 2>&1
}

# Modules in dependency order (resolved from modules.dep at build time).
for m in @MODULES@; do
	insmod "/lib/modules/$m" || echo "vmlab initramfs: insmod $m failed" >/dev/console
done

root=/dev/vda
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=/dev/*) root="${arg#root=}" ;;
	esac
done

# Wait for the root disk: poll every 0.1 s, at most 10 s.
i=0
while [ ! -b "$root" ]; do
	i=$((i + 1))
	[ "$i" -gt 100 ] && fail "root disk $root did not appear within 10 s (is it the first virtio disk?)"
	usleep 100000
done

mount -t ext4 -o rw "$root" /newroot || fail "cannot mount $root (ext4) on /newroot"
if [ ! -e /newroot/sbin/init ] && [ ! -L /newroot/sbin/init ]; then
	fail "$root has no /sbin/init"
fi

mount --move /dev /newroot/dev || umount /dev
umount /sys
umount /proc
exec switch_root /newroot /sbin/init
