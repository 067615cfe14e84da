#!/bin/bash
# The test harness's agent in the booted-machine image (tests/src/vm.rs).
# It runs the commands the host sends on the virtio-serial port named
# vm.agent, one at a time, as root:
#   host -> guest:  one line, a bash script in base64
#   guest -> host:  DONE <exit code> <stdout in base64> <stderr in base64>
# Once the boot is over (systemctl is-system-running --wait) it says
#   READY <boot id>
# so the host knows a (re)boot finished, and which boot it talks to.
set -u
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
while IFS= read -r line <&3; do
  printf '%s' "$line" | base64 -d >/run/vm-agent.sh
  bash /run/vm-agent.sh </dev/null >/run/vm-agent.out 2>/run/vm-agent.err 3>&-
  rc=$?
  echo "DONE $rc $(base64 -w0 </run/vm-agent.out) $(base64 -w0 </run/vm-agent.err)" >&3
done
