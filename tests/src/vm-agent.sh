#!/bin/bash
# The test harness's agent in the booted-machine image (tests/src/vm.rs).
# It runs the commands the host sends on the virtio-serial port named
# vm.agent, one at a time, as root:
#   host -> guest:  a line with the script's length in bytes, then the
#                   script (bash)
#   guest -> host:  DONE <exit code> <stdout in base64> <stderr in base64>
# Once the boot is over (systemctl is-system-running --wait) it says
#   READY <boot id>
# so the host knows a (re)boot finished, and which boot it talks to.
# Every process costs under software emulation, so a script runs in a
# subshell of the agent (a fork, no new bash), and base64 runs only for
# output there is.
set -u
export LC_ALL=C  # read -N counts bytes
port=
for _ in $(seq 600); do  # udev loads virtio_console some time into the boot
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = vm.agent ] && port=/dev/${p##*/}
  done
  [ -n "$port" ] && [ -c "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "vm-agent: no virtio-serial port named vm.agent" >&2; exit 1; }
exec 3<>"$port"
systemctl is-system-running --wait >/dev/null 2>&1
echo "READY $(cat /proc/sys/kernel/random/boot_id)" >&3
out=/run/vm-agent.out err=/run/vm-agent.err
while IFS= read -r n <&3; do
  script=
  [ "$n" -gt 0 ] && { IFS= read -r -N "$n" script <&3 || break; }
  (set +u; unset n out err port p; eval "$script") </dev/null >$out 2>$err 3>&-
  rc=$?
  {
    printf 'DONE %s ' "$rc"
    [ -s $out ] && base64 -w0 $out
    printf ' '
    [ -s $err ] && base64 -w0 $err
    echo
  } >&3
done
