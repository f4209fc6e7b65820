#!/bin/sh
# post-receive hook for a bare policy repository: tells `regent serve` that a branch moved, so a
# plain `git push` publishes, or the server refuses to publish it and the pusher is told why. The
# push itself has landed by then: install docs/pre-receive.sh too to refuse failing pushes.
#
# Install: copy to <repo>.git/hooks/post-receive, chmod +x, then in the bare repository:
#   git config regent.url https://regent.example:8181/v1/hooks/git
#   git config regent.secretfile /etc/regent/webhook.secret   # same file as webhook.secret_file
#   git config regent.json true   # optional: print the server's JSON answer, not a summary
# Needs curl and openssl. The body is signed like GitHub does (X-Hub-Signature-256).
# Note: openssl receives the secret as an argument, so it is briefly visible in `ps` on the
# git host.

url=$(git config regent.url) || { echo "regent: git config regent.url is not set; not notifying" >&2; exit 0; }
secretfile=$(git config regent.secretfile) || { echo "regent: git config regent.secretfile is not set" >&2; exit 0; }
secret=$(cat "$secretfile") || exit 0
# The server answers a few lines of text (published: bundles and revision; refused: each
# failing test with file:line) unless JSON is asked for.
accept='Accept: text/plain'
if [ "$(git config --bool regent.json)" = true ]; then
	accept='Accept: application/json'
fi

while read -r old new ref; do
	# A branch name may contain '"' (git allows it): escape it so the body stays JSON.
	ref_json=$(printf '%s' "$ref" | sed 's/\\/\\\\/g; s/"/\\"/g')
	body=$(printf '{"ref":"%s","before":"%s","after":"%s"}' "$ref_json" "$old" "$new")
	sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
	# The server answers once the build is done (up to webhook.wait_seconds), so the pusher
	# sees whether the commit was published or refused, and why.
	curl -sS --max-time 120 \
		-H 'Content-Type: application/json' \
		-H "$accept" \
		-H "X-Hub-Signature-256: sha256=$sig" \
		--data-binary "$body" "$url"
	# The JSON answer has no final newline.
	[ "$accept" = 'Accept: text/plain' ] || echo
done
exit 0
