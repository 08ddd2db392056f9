#!/bin/sh
# vmlab guest init, run once at boot by busybox init (::sysinit: in /etc/inittab).
# Mounts the kernel file systems, configures the network from vmlab.net= on the
# kernel command line, applies the NoCloud seed (hostname, SSH keys), starts
# dropbear and the vCPU hot-plug helper. Written by `vmlab image build`.
#
# Every external command costs ~40 ms under TCG: this script prefers shell
# builtins (read, case, parameter expansion) to pipes of small tools.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "vmlab: $*" >/dev/console; }

[ -e /proc/mounts ] || mount -t proc proc /proc
mounts=
while read -r _dev mnt _rest; do mounts="$mounts $mnt "; done </proc/mounts
mounted() { case "$mounts" in *" $1 "*) return 0 ;; esac; return 1; }

mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mounted /run || mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /dev/pts /dev/shm /run/vmlab/seed /var/log /tmp
mounted /dev/pts || mount -t devpts -o mode=620,ptmxmode=666 devpts /dev/pts
mount -o remount,rw /

# --- network -----------------------------------------------------------------
read -r cmdline </proc/cmdline
net=
for arg in $cmdline; do
	case "$arg" in
	vmlab.net=*) net="${arg#vmlab.net=}" ;;
	esac
done
ip link set lo up
case "$net" in
user)
	# QEMU user-mode network: the address is always the same, no DHCP needed.
	ip addr add 10.0.2.15/24 dev eth0
	ip link set eth0 up
	ip route add default via 10.0.2.2
	echo "nameserver 10.0.2.3" >/etc/resolv.conf
	# Announce our MAC address to QEMU's network stack (gratuitous ARP; it
	# stays inside QEMU). Until slirp has seen a frame from the guest it cannot
	# deliver the SYN of a forwarded connection and retries only after 1-3 s.
	(arping -q -U -c 1 -I eth0 10.0.2.15 || ping -q -c 1 -W 1 10.0.2.2) >/dev/null 2>&1 &
	;;
dhcp)
	ip link set eth0 up
	setsid udhcpc -b -i eth0 -s /etc/vmlab/udhcpc.script </dev/null >/dev/null 2>&1 &
	;;
"")
	say "no vmlab.net= on the kernel command line: network not configured"
	;;
*)
	say "unknown vmlab.net=$net (expected user or dhcp): network not configured"
	;;
esac

# --- NoCloud seed --------------------------------------------------------------
trim() { # trim VALUE: strips blanks, CR and quotes around VALUE into $trimmed
	trimmed="$1"
	trimmed="${trimmed%"${trimmed##*[! 	]}"}"
	trimmed="${trimmed#"${trimmed%%[! 	]*}"}"
	trimmed="${trimmed%"$cr"}"
	trimmed="${trimmed#[\"\']}"
	trimmed="${trimmed%[\"\']}"
}
cr=$(printf '\r')
seed_dir=/run/vmlab/seed
seed=$(findfs LABEL=cidata 2>/dev/null)
if [ ! -b "$seed" ]; then
	seed=/dev/vdb
	i=0
	while [ ! -b "$seed" ] && [ "$i" -lt 10 ]; do
		i=$((i + 1))
		sleep 0.1
	done
fi
host=
keys=
if mount -t iso9660 -o ro "$seed" "$seed_dir" 2>/dev/null; then
	if [ -f "$seed_dir/user-data" ]; then
		in_keys=0
		while IFS= read -r line || [ -n "$line" ]; do
			line="${line%"$cr"}"
			case "$line" in
			"hostname:"*)
				in_keys=0
				trim "${line#hostname:}"
				host="$trimmed"
				;;
			"ssh_authorized_keys:"*) in_keys=1 ;;
			" "*"- "*)
				if [ "$in_keys" = 1 ]; then
					trim "${line#*- }"
					keys="$keys$trimmed
"
				fi
				;;
			*) in_keys=0 ;;
			esac
		done <"$seed_dir/user-data"
	fi
	if [ -z "$host" ] && [ -f "$seed_dir/meta-data" ]; then
		while IFS= read -r line || [ -n "$line" ]; do
			case "$line" in
			"local-hostname:"*)
				trim "${line#local-hostname:}"
				host="$trimmed"
				;;
			esac
		done <"$seed_dir/meta-data"
	fi
	umount "$seed_dir"
else
	say "no NoCloud seed (LABEL=cidata or /dev/vdb): hostname and SSH keys not set"
fi

if [ -z "$host" ] && [ -s /etc/hostname ]; then
	read -r host </etc/hostname
fi
if [ -n "$host" ]; then
	hostname "$host"
	echo "$host" >/etc/hostname
	known=0
	while read -r _addr names; do
		case " $names " in *" $host "*) known=1 ;; esac
	done </etc/hosts
	[ "$known" = 1 ] || echo "127.0.1.1	$host" >>/etc/hosts
fi

if [ -n "$keys" ]; then
	umask 077
	mkdir -p /root/.ssh
	printf '%s' "$keys" >/root/.ssh/authorized_keys
	chmod 700 /root /root/.ssh
	chmod 600 /root/.ssh/authorized_keys
	umask 022
else
	say "the seed has no ssh_authorized_keys: nobody can log in"
fi

# --- services ----------------------------------------------------------------
mkdir -p /etc/dropbear
if /usr/sbin/dropbear -R -s -p 22; then
	say "guest ready"
else
	say "dropbear failed to start: no SSH"
fi

# Modules not needed for SSH (virtio_balloon: inflating the balloon down to the
# boot memory costs seconds under TCG), loaded once sshd runs.
for m in /lib/modules/vmlab/*.ko; do
	[ -e "$m" ] && insmod "$m"
done

# vCPU hot-plug: a hot-plugged vCPU arrives offline; bring it online.
setsid /etc/vmlab/cpu-online </dev/null >/dev/null 2>&1 &
