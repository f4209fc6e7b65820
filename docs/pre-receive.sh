#!/bin/sh
# pre-receive hook for a bare policy repository that `regent serve` publishes from: runs the
# server's publish gate (build, compile, *_test.rego tests, entrypoint decisions) on the pushed
# commit of the tracked branch and refuses the push, naming what failed, if the gate would.
# Other branches, tags and deletions pass.
#
# Install: copy to <repo>.git/hooks/pre-receive, chmod +x, then in the bare repository:
#   git config regent.config /etc/regent/serve.yaml   # the server's configuration file
#   git config regent.bin /usr/local/bin/regent       # optional; default: regent on PATH
#   git config regent.json true                       # optional: print JSON, not a summary
# Without regent.config every push is refused: a gate that is installed but not configured
# must not let a failing commit through.

config=$(git config regent.config) || {
	echo "regent: git config regent.config is not set; refusing the push" >&2
	exit 1
}
bin=$(git config regent.bin) || bin=regent
if [ "$(git config --bool regent.json)" = true ]; then
	exec "$bin" hook pre-receive --config "$config" --json
fi
exec "$bin" hook pre-receive --config "$config"
