#!/bin/sh
# post-receive hook for a bare policy repository: tells `regent serve` that a branch moved, so a
# plain `git push` publishes (or is refused, with the reason printed back to the pusher).
#
# Install: copy to <repo>.git/hooks/post-receive, chmod +x, then in the bare repository:
#   git config regent.url https://regent.example:8181/v1/hooks/git
#   git config regent.secretfile /etc/regent/webhook.secret   # same file as webhook.secret_file
# Needs curl and openssl. The body is signed like GitHub does (X-Hub-Signature-256).
# Note: openssl receives the secret as an argument, so it is briefly visible in `ps` on the
# git host.

url=$(git config regent.url) || { echo "regent: git config regent.url is not set; not notifying" >&2; exit 0; }
secretfile=$(git config regent.secretfile) || { echo "regent: git config regent.secretfile is not set" >&2; exit 0; }
secret=$(cat "$secretfile") || exit 0

while read -r old new ref; do
	body=$(printf '{"ref":"%s","before":"%s","after":"%s"}' "$ref" "$old" "$new")
	sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
	# The server answers once the build is done (up to webhook.wait_seconds), so the pusher
	# sees whether the commit was published or refused, and why.
	curl -sS --max-time 120 \
		-H 'Content-Type: application/json' \
		-H "X-Hub-Signature-256: sha256=$sig" \
		--data-binary "$body" "$url"
	echo
done
exit 0
