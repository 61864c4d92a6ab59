#!/bin/bash
set -euo pipefail
echo "provisioned on $(hostname)" > /etc/motd
