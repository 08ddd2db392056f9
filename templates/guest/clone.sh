#!/bin/sh
# vmlab clone identity. vmlab starts this in a template VM just before it
# saves the template's memory, so every clone restored from it wakes up here,
# blocked on the second serial port (ttyS1; on the host a unix socket that only
# root and QEMU's user can open). vmlab sends one line:
#   vmlab-clone HOSTNAME EPOCH_S SEED AUTHORIZED_KEY
# and this makes the guest its own machine before anything reaches it over
# the network: the kernel RNG reseeded, the clock set, its hostname, the lab's
# SSH key, a new SSH host key and an SSH server that serves it. It answers
#   vmlab-clone-ok RESEED_STATUS SSHD_STATUS KEYTYPE BASE64
# Every external command costs ~40 ms under TCG: shell builtins where possible.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
tty=/dev/ttyS1
dir=/run/vmlab
stty -F "$tty" raw -echo
: >"$dir/waiting"
read -r tag host epoch seed key <"$tty"
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

# A new host key (dropbearkey will not overwrite a file), then a new sshd
# serving only it; the template's sshd goes first (it holds port 22).
hostkey=/etc/dropbear/dropbear_ed25519_host_key
out=$("$dir/dropbearkey" -t ed25519 -f "$hostkey.new" 2>/dev/null)
mv -f "$hostkey.new" "$hostkey"
pub=
while read -r kind base64 _; do
	case "$kind" in
	ssh-ed25519) pub="$kind $base64" ;;
	esac
done <<EOF
$out
EOF
if read -r pid </var/run/dropbear.pid; then
	kill "$pid"
	i=0
	while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100000 ]; do i=$((i + 1)); done
fi
/usr/sbin/dropbear -s -p 22 -r "$hostkey"
sshd=$?
echo "vmlab-clone-ok $reseeded $sshd $pub" >"$tty"
