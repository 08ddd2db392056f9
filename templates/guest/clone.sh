#!/bin/sh
# vmlab clone identity. vmlab starts this in a template VM just before it
# saves the template's memory, so every clone restored from it wakes up here,
# blocked on the second serial port (ttyS1; on the host a unix socket that only
# root and QEMU's user can open). vmlab sends one line:
#   vmlab-clone HOSTNAME EPOCH_S SEED HOST_KEY AUTHORIZED_KEY
# (HOST_KEY: a new dropbear host key file as printf escapes, made on the host)
# and this makes the guest its own machine before anything reaches it over
# the network: the kernel RNG reseeded, the clock set, its hostname, the lab's
# SSH key, the new host key and an SSH server that serves it. It answers
#   vmlab-clone-ok RESEED_STATUS SSHD_STATUS
# Every external command costs ~40 ms under TCG: shell builtins where possible.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
tty=/dev/ttyS1
dir=/run/vmlab
stty -F "$tty" raw -echo
: >"$dir/waiting"
read -r tag host epoch seed hostkey key <"$tty"
if [ "$tag" != vmlab-clone ]; then
	echo "vmlab-clone-error unexpected line" >"$tty"
	exit 1
fi

# The kernel kept the template's RNG state. Writing alone only mixes the
# host's bytes into the input pool for the next scheduled reseed; reseed now.
printf '%s' "$seed" >/dev/urandom
"$dir/reseed"
reseeded=$?

date -s "@$epoch" >/dev/null
echo "$host" >/proc/sys/kernel/hostname
echo "$host" >/etc/hostname
hosts=
while IFS= read -r line; do
	case "$line" in
	127.0.1.1*) ;;
	*) hosts="$hosts$line
" ;;
	esac
done </etc/hosts
printf '%s127.0.1.1\t%s\n' "$hosts" "$host" >/etc/hosts

umask 077
printf '%s\n' "$key" >/root/.ssh/authorized_keys

# The new host key (the template left none on its disk), then a new sshd
# serving only it; the template's sshd goes first (it holds port 22).
keyfile=/etc/dropbear/dropbear_ed25519_host_key
printf "$hostkey" >"$keyfile"
if read -r pid </var/run/dropbear.pid; then
	kill "$pid"
	i=0
	while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100000 ]; do i=$((i + 1)); done
fi
/usr/sbin/dropbear -s -p 22 -r "$keyfile"
echo "vmlab-clone-ok $reseeded $?" >"$tty"
# The key file on the disk too (printf does not fsync; ext4 would leave it
# empty if the clone were killed within the next seconds, and a boot from
# that disk would find a key dropbear cannot load). After the answer: off
# the path to SSH-ready.
sync
