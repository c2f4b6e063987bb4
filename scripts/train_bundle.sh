#!/usr/bin/env bash
# Train a whole MusicLM bundle on one captioned dataset: a thin wrapper of `musiclm train bundle`.
#
#   scripts/train_bundle.sh DATA RUN [MINUTES]     # the bundle ends up in RUN/bundle
#
# PRESET picks the config preset (default tiny), PYTHON the interpreter. Rerun to continue.
set -euo pipefail
DATA=$1 RUN=$2 MINUTES=${3:-30}
exec "${PYTHON:-python3}" -m musiclm train bundle --data "$DATA" --out "$RUN" --minutes "$MINUTES" --preset "${PRESET:-tiny}"
