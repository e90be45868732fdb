#!/usr/bin/env bash
# Installs what rkube and its tests need beyond the Rust toolchain, skipping what is present.
# Used by the README's commands and by CI; safe to run again.
set -euo pipefail

packages=(
  protobuf-compiler   # etcd-client's build generates its gRPC code
  etcd-server         # the etcd datastore backend and its tests
  ca-certificates
  curl
  python3-pip
  runc                         # runs containers (node agent)
  containernetworking-plugins  # bridge, host-local, loopback, portmap (pod networking)
  nftables                     # the service proxy's rules
  iproute2                     # network namespaces in tests
  docker-registry              # a real OCI registry on loopback for tests
  umoci                        # builds test images offline
  skopeo                       # copies images between layouts and registries
  busybox-static               # the userland of test images
  iptables                     # the proxy benchmark's reference: iptables-restore of kube-proxy's rules
  dnsmasq-base                 # the DNS benchmark's reference server (no system service)
)

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian 12's busybox-static (1.35) is built without wget's timeout option, and `wget -T 5`
# (which the acceptance scenarios run inside their busybox images) crashes it. Debian 13's
# package (1.37, static, no dependencies) has it: install that one, pinned by its checksum.
if busybox wget -T 1 -q -O /dev/null http://127.0.0.1:9/ 2>/dev/null; [ $? -ge 128 ]; then
  deb=busybox-static_1.37.0-6+b9_amd64.deb
  sum=598a3fd92bdafc34cd81196b2952ad36e910e47a4ecf162f8ce5e8e262598e53
  tmp=$(mktemp -d)
  curl -fsS -m 120 -o "$tmp/$deb" "http://deb.debian.org/debian/pool/main/b/busybox/$deb"
  echo "$sum  $tmp/$deb" | sha256sum -c --quiet
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO dpkg -i "$tmp/$deb" >/dev/null
  rm -rf "$tmp"
fi
# etcd's package may start a system etcd on 2379; tests use their own on free ports.
if systemctl is-active --quiet etcd 2>/dev/null; then systemctl stop etcd || true; fi

# The official Python client, for the client compatibility test.
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check kubernetes 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kubernetes
fi

command -v kubectl >/dev/null || { echo "kubectl is required on PATH" >&2; exit 1; }
