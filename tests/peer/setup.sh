#!/usr/bin/env bash
# Fetches the peer test suites the end-to-end tests aim at Ferry (idempotent):
# OpenSSH's regress scripts (Debian's openssh-tests) and paramiko's SFTP tests
# (from the paramiko sdist matching the installed paramiko), plus pytest.
set -euo pipefail
cd "$(dirname "$0")"
dest=../../target/peer

if ! dpkg-query -W -f='${Status}' openssh-tests 2>/dev/null | grep -q "install ok installed"; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-tests >/dev/null
fi
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q pytest
ver=$(python3 -c 'import paramiko; print(paramiko.__version__)')
if [ ! -f "$dest/paramiko-$ver/tests/test_sftp.py" ]; then
  mkdir -p "$dest"
  python3 -m pip download -q --no-binary :all: --no-deps "paramiko==$ver" -d "$dest"
  tar xzf "$dest/paramiko-$ver.tar.gz" -C "$dest"
fi
echo "peer suites ready: /usr/lib/openssh/regress, $dest/paramiko-$ver/tests"
