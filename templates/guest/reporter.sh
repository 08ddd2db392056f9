#!/bin/sh
# vmlab guest reporter: prints one line of guest metrics per interval on stdout,
# read by the host over the SSH channel that started it (nothing listens on a port).
#
#   usage: reporter.sh [INTERVAL_S]     (default 1; fractions like 0.5 allowed)
#
# Line format `vmlab-r1`, ten fields separated by one space:
#   vmlab-r1 UPTIME_MS CPU_PCT MEM_TOTAL_KIB MEM_USED_KIB MEM_AVAILABLE_KIB
#            DISK_READ_KIB_S DISK_WRITE_KIB_S NET_RX_BYTES NET_TX_BYTES
# UPTIME_MS   guest monotonic clock (/proc/uptime, 10 ms steps); busybox ash has
#             no fork-free wall clock, so the host stamps wall time on receipt.
# CPU_PCT     busy share of all guest CPUs since the previous line (0.0-100.0).
# MEM_USED    MemTotal - MemAvailable.
# DISK_*      sectors moved on hardware-backed disks since the previous line, per second.
# NET_*       byte counters of hardware-backed interfaces since boot (not rates).
# The first line comes one interval after start, so every line holds deltas.
#
# Cost: a shell and an awk run for good; nothing forks per sample (under TCG
# a fork+exec costs ~40 ms of guest CPU, more than a whole sample should). The
# shell only keeps time: `read -t` on a FIFO nobody writes to is its sleep, and
# it sends awk one empty line per interval. awk reads the /proc and /sys files
# with buffered reads (a shell `read` makes two syscalls per byte).
# Needs a shell with fractional `read -t` (busybox ash, bash) and an awk
# (busybox, gawk, mawk).

interval=${1:-1}
case $interval in
'' | . | *[!0-9.]* | *.*.*)
	echo "reporter: interval must be seconds like 1 or 0.5, not '$interval'" >&2
	exit 2
	;;
esac
whole=${interval%%.*}
frac=
case $interval in *.*) frac=${interval#*.} ;; esac
frac=${frac}00
frac=${frac%"${frac#??}"}
interval_cs=$((${whole:-0} * 100 + 1$frac - 100))
if [ "$interval_cs" -le 0 ]; then
	echo "reporter: interval must be at least 0.01 s, not '$interval'" >&2
	exit 2
fi

# Devices are found once: a disk or interface with a `device` link is backed by
# hardware (virtio); loop, ram, zram, dm, lo and bridges have none.
disks=
for d in /sys/block/*; do
	[ -e "$d/device" ] && disks="$disks $d/stat"
done
nics=
for n in /sys/class/net/*; do
	[ -e "$n/device" ] && nics="$nics $n/statistics"
done

fifo=${TMPDIR:-/tmp}/vmlab-reporter.$$
mkfifo -m 600 "$fifo" || exit 1
exec 3<>"$fifo"
rm -f "$fifo"
# A shell without `read -t` (dash) would spin instead of sleeping: refuse it.
read -r -t 0.01 _ <&3 2>/dev/null
if [ $? -eq 2 ]; then
	echo "reporter: this shell has no 'read -t'; run it with busybox sh or bash" >&2
	exit 2
fi

# One empty line per interval on a fixed cadence (centiseconds since boot).
ticker() {
	read -r up _ </proc/uptime
	now_cs=$((${up%.*} * 100 + 1${up#*.} - 100))
	next_cs=$now_cs
	while :; do
		next_cs=$((next_cs + interval_cs))
		# Fell behind (a loaded guest): start a new cadence rather than burst.
		[ "$next_cs" -gt "$now_cs" ] || next_cs=$((now_cs + interval_cs))
		wait_cs=$((next_cs - now_cs))
		cs=$((100 + wait_cs % 100))
		read -r -t "$((wait_cs / 100)).${cs#1}" _ <&3
		echo || exit
		read -r up _ </proc/uptime
		now_cs=$((${up%.*} * 100 + 1${up#*.} - 100))
	done
}

# mawk reads a pipe in blocks and would sit on the ticks: ask it for lines.
awk=awk
case $(awk -W version 2>&1) in mawk*) awk="awk -W interactive" ;; esac

# awk prints integers with %.0f: busybox awk's %d wraps at 2^31.
ticker | $awk -v disks="$disks" -v nics="$nics" '
function first_line(file,   line) {
	line = ""
	getline line <file
	close(file)
	return line
}
function sample(   a, i, n, path, line) {
	split(first_line("/proc/uptime"), a, " ")
	uptime_cs = int(a[1] * 100 + 0.5)
	split(first_line("/proc/stat"), a, " ")
	cpu_busy = a[2] + a[3] + a[4] + a[7] + a[8] + a[9]
	cpu_total = cpu_busy + a[5] + a[6]
	while ((getline line <"/proc/meminfo") > 0) {
		split(line, a, " ")
		if (a[1] == "MemTotal:") mem_total_kib = a[2]
		if (a[1] == "MemAvailable:") { mem_available_kib = a[2]; break }
	}
	close("/proc/meminfo")
	sectors_read = sectors_written = 0
	n = split(disks, path, " ")
	for (i = 1; i <= n; i++) {
		split(first_line(path[i]), a, " ")
		sectors_read += a[3]
		sectors_written += a[7]
	}
	rx_bytes = tx_bytes = 0
	n = split(nics, path, " ")
	for (i = 1; i <= n; i++) {
		rx_bytes += first_line(path[i] "/rx_bytes")
		tx_bytes += first_line(path[i] "/tx_bytes")
	}
}
BEGIN { sample() }
{
	prev_cs = uptime_cs; prev_busy = cpu_busy; prev_total = cpu_total
	prev_read = sectors_read; prev_written = sectors_written
	sample()
	elapsed_s = (uptime_cs > prev_cs) ? (uptime_cs - prev_cs) / 100 : 0.01
	cpu_pct = (cpu_total > prev_total) ? 100 * (cpu_busy - prev_busy) / (cpu_total - prev_total) : 0
	# A sector is 512 bytes: sectors / 2 = KiB.
	printf "vmlab-r1 %.0f %.1f %.0f %.0f %.0f %.1f %.1f %.0f %.0f\n", uptime_cs * 10, cpu_pct,
		mem_total_kib, mem_total_kib - mem_available_kib, mem_available_kib,
		(sectors_read - prev_read) / 2 / elapsed_s, (sectors_written - prev_written) / 2 / elapsed_s,
		rx_bytes, tx_bytes
	fflush()
}'
