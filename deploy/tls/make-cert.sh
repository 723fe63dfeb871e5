#!/bin/sh
# The one-shot `tls-init` service of docker-compose.https.yml: makes the self-signed
# certificate the balancer serves over HTTPS, into the `tls-cert` volume mounted at $TLS_DIR.
#
# A certificate already there is kept while it stays valid for 30 more days, so restarts,
# `up` again and re-created containers all serve the same one (a browser exception or a
# copied --cacert stays good); only a missing, expiring or half-written pair is replaced.
set -eu

dir=${TLS_DIR:-/tls}
cert=$dir/cert.pem
key=$dir/key.pem
# The balancer image's unprivileged user, which must read the key.
owner=${TLS_OWNER:-10001:10001}

if [ -s "$cert" ] && [ -s "$key" ] && openssl x509 -in "$cert" -noout -checkend 2592000 >/dev/null 2>&1; then
  echo "tls-init: keeping $cert, $(openssl x509 -in "$cert" -noout -fingerprint -sha256)"
  exit 0
fi

umask 077
tmp=$(mktemp -d "$dir/.new.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>"$tmp/openssl.log" \
  || { cat "$tmp/openssl.log" >&2; echo "tls-init: openssl could not make the certificate" >&2; exit 1; }
chmod 0400 "$tmp/key.pem"
chmod 0444 "$tmp/cert.pem"
chown "$owner" "$tmp/key.pem" "$tmp/cert.pem"
# Key first, certificate last: a run cut short in between leaves no valid certificate beside
# a key that does not fit it, so the next start makes a new pair.
mv "$tmp/key.pem" "$key"
mv "$tmp/cert.pem" "$cert"
echo "tls-init: made $cert (self-signed, localhost 127.0.0.1 ::1, 825 days), $(openssl x509 -in "$cert" -noout -fingerprint -sha256)"
