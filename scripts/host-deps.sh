#!/usr/bin/env bash
# Installs the Debian packages Keel's build, tests and demo need, and only those that are missing.
# Packages go in with --no-install-recommends, so a recommended package that is needed is named
# here itself (libprotobuf-dev, which protobuf-compiler only recommends). `../shared/clean-room/run`
# proves the list on a new machine's packages.
set -euo pipefail
packages=(
  qemu-system-x86 qemu-utils ovmf          # booting images
  mmdebstrap                               # the base tree
  e2fsprogs dosfstools mtools              # root filesystem, ESP
  cryptsetup-bin                           # veritysetup: the verity test compares against it
  systemd-boot-efi                         # bootloader (the image also carries its own copy)
  fdisk cpio                               # sfdisk and cpio: tests read back GPT and initramfs
  openssh-client                           # logging in to test VMs
  protobuf-compiler libprotobuf-dev        # etcd-client's build script: protoc and the well-known .proto files
  etcd-server etcd-client                  # the agents' tests start a real etcd
  iproute2 iptables iputils-ping iperf3    # flannel's tests: namespaces, masquerade rules, ping, throughput
  xorriso ipxe-qemu                        # the hybrid ISO; iPXE in QEMU's NIC ROMs for the PXE test
  docker-registry                          # the registry `keel vm`, `keel cluster up` and the tests serve images from
  chromium                                 # the demo test opens the demo's page in a headless browser
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -q
  # Daemons these packages carry (docker-registry, etcd) are not started by their install: Keel
  # starts its own, on loopback, when it needs them.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
