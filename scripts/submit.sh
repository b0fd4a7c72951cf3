#!/usr/bin/env bash
# Submit the cohort embedding job to a Ray cluster. Run it from the repository root, in the project's
# environment (docs/cluster.md):
#   scripts/submit.sh CONFIG [--dry-run | --overwrite]
# RAY_ADDRESS: the cluster's dashboard, default http://127.0.0.1:8265 (a local head, or the port that
# `ray dashboard cluster.yaml` forwards). Token authentication: when RAY_AUTH_MODE is unset and a token is
# at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), it is used, as `ray start` does.
# The job is `neuro-caduceus embed-cohort` run from the uploaded checkout; it receives this folder as
# --client-dir: relative config paths that were not uploaded (ignored by
# .gitignore) and output.dir resolve here, never in Ray's temporary package folder; the job checks that
# every node can see them before it starts.
set -euo pipefail
usage="usage: scripts/submit.sh CONFIG [--dry-run | --overwrite]"
config=${1:?$usage}
shift
if [[ ! -f neuro_caduceus/__main__.py ]]; then
    echo "error: run scripts/submit.sh from the repository root (the folder uploaded with --working-dir)" >&2
    exit 2
fi
if [[ ! -f $config ]]; then
    echo "error: config $config does not exist" >&2
    exit 2
fi
if git check-ignore -q -- "$config" 2>/dev/null; then
    echo "error: config $config is ignored by .gitignore, so --working-dir does not upload it;" \
         "move it out of the ignored folder or give an absolute path that every node sees" >&2
    exit 2
fi
token_file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
if [[ -z ${RAY_AUTH_MODE:-} && ( -n ${RAY_AUTH_TOKEN:-} || -f $token_file ) ]]; then
    export RAY_AUTH_MODE=token
fi
exec ray job submit --address "${RAY_ADDRESS:-http://127.0.0.1:8265}" --working-dir . -- \
    python -m neuro_caduceus embed-cohort --config "$config" --client-dir "$PWD" "$@"
