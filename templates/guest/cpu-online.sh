#!/bin/sh
# vmlab: bring hot-plugged vCPUs online (they arrive offline). Checks every
# second. Only a CPU it has not seen before is onlined: a CPU someone took
# offline on purpose (vmlab does, to give a benchmark fewer CPUs without a
# live unplug) stays offline; an unplugged one is forgotten, so it is
# onlined again when it is plugged back.
seen=" "
while :; do
	now=" "
	for d in /sys/devices/system/cpu/cpu[0-9]*; do
		[ -e "$d/online" ] || continue
		cpu=${d##*/}
		now="$now$cpu "
		case "$seen" in *" $cpu "*) continue ;; esac
		read -r state <"$d/online" 2>/dev/null || continue
		[ "$state" = 0 ] && echo 1 >"$d/online" 2>/dev/null
	done
	seen=$now
	sleep 1
done
