#!/bin/sh
# vmlab: bring hot-plugged vCPUs online (they arrive offline). Checks every second.
while :; do
	for f in /sys/devices/system/cpu/cpu[0-9]*/online; do
		[ -e "$f" ] || continue
		read -r state <"$f" 2>/dev/null || continue
		[ "$state" = 0 ] && echo 1 >"$f" 2>/dev/null
	done
	sleep 1
done
