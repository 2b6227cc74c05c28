#!/usr/bin/env bash
# Install what the real ssh test site (tests/sitekit.py) and the real Slurm (tests/slurmkit.py) need,
# from Debian's packages: sshd + ssh client, pam_oath + oathtool, ip (network namespaces), procps;
# Slurm 22.05 (slurmctld, slurmd, the client commands) and munge; PostgreSQL (tests/pgkit.py);
# MariaDB (tests/mariakit.py); chromium + chromium-driver (the web console's browser tests).
# Idempotent: installs only when a package is missing, runs `apt-get update` at most once, and never
# starts (or leaves running) the system's ssh, munge, slurm, PostgreSQL or MariaDB services: the tests
# run their own.
set -euo pipefail

PKGS=(openssh-server openssh-client libpam-oath oathtool iproute2 procps)
PKGS+=(slurmctld slurmd slurm-client munge)
PKGS+=(postgresql)  # initdb / pg_ctl for the private PostgreSQL of tests/pgkit.py (never the system cluster)
PKGS+=(mariadb-server)  # mariadb-install-db / mariadbd for the private MariaDB of tests/mariakit.py (never the system one)
PKGS+=(chromium chromium-driver)  # headless browser + chromedriver for the web console's browser tests (tests/web/)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-test-services: no dpkg here; install ${PKGS[*]} (or equivalents) by hand" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-services: all present (${PKGS[*]}); nothing to do"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-services: missing ${missing[*]}; run this script as root (it uses apt-get)" >&2
  exit 1
fi

# Debian's openssh-server postinst starts ssh through invoke-rc.d / deb-systemd-invoke, both of which
# ask policy-rc.d first: 101 = "action forbidden". Ours exists only during the install.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# install-test-services.sh: no service starts during this install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

was_sshd_running=0
if pgrep -x sshd >/dev/null 2>&1 || [ -e /run/sshd.pid ]; then was_sshd_running=1; fi
# munge and slurm daemons that ran before the install (the tests' own, from tests/slurmkit.py) stay
daemon_pids() { for d in munged slurmctld slurmd; do pgrep -x "$d" || true; done | sort; }
# MariaDB servers that ran before (the tests' own, from tests/mariakit.py, run with --datadir under /tmp)
# stay; Debian's mariadb-server postinst starts the system one (datadir /var/lib/mysql) unless forbidden
maria_pids() { for d in mariadbd mysqld; do pgrep -x "$d" || true; done | sort; }
maria_before=$(maria_pids)
pids_before=$(daemon_pids)
# Debian's postgresql creates a cluster "main" and starts it unless policy-rc.d forbids: the tests
# run private clusters in /tmp (not registered with pg_lsclusters), so a cluster found online
# after the install that was not before is one the install started
online_clusters() { if command -v pg_lsclusters >/dev/null 2>&1; then pg_lsclusters -h 2>/dev/null | awk '$4 ~ /^online/ {print $1 "/" $2}' | sort; fi; }
clusters_before=$(online_clusters)

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null

# A policy-rc.d that was already there may have allowed the start: undo a start that was not there before.
stopped=""
if [ "$was_sshd_running" = 0 ] && [ -e /run/sshd.pid ]; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
  else
    kill "$(cat /run/sshd.pid)" 2>/dev/null || true
  fi
  stopped="; stopped the system sshd the install started"
fi
new_pids=$(comm -13 <(echo "$pids_before") <(daemon_pids) | grep . || true)
if [ -n "$new_pids" ]; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now munge.service slurmctld.service slurmd.service >/dev/null 2>&1 || true
  fi
  # shellcheck disable=SC2086 # one pid a word
  kill $new_pids 2>/dev/null || true
  stopped="${stopped}; stopped the munge/slurm daemons the install started (pids $(echo $new_pids))"
fi

new_clusters=$(comm -13 <(echo "$clusters_before") <(online_clusters) | grep . || true)
for c in $new_clusters; do
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now postgresql.service >/dev/null 2>&1 || true
  fi
  pg_ctlcluster "${c%/*}" "${c#*/}" stop >/dev/null 2>&1 || true
  stopped="${stopped}; stopped the PostgreSQL cluster ${c} the install started"
done

new_maria=$(comm -13 <(echo "$maria_before") <(maria_pids) | grep . || true)
if [ -n "$new_maria" ]; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now mariadb.service >/dev/null 2>&1 || true
  fi
  # shellcheck disable=SC2086 # one pid a word
  kill $new_maria 2>/dev/null || true
  stopped="${stopped}; stopped the MariaDB server the install started (pids $(echo $new_maria))"
fi

if [ "$own_policy" = 1 ]; then how="service starts blocked by a temporary policy-rc.d"; else how="existing policy-rc.d kept"; fi
echo "install-test-services: installed ${missing[*]} (apt-get update + install; ${how})${stopped}"
