#!/usr/bin/env bash
# Generates the secrets the compose stack reads, under deploy/secrets/ (never committed; see
# .gitignore): HMAC keys for passes, identity hashes and status tokens, the admin token, a reviewer
# account, MinIO's root credentials and the S3 credentials the roles use. Existing files are kept,
# so keys survive a restart; delete one to rotate it (pass keys: prepend a new `kid:secret` to
# `pass_keys` instead, so passes signed with the old key stay valid until they expire).
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
if [ ! -s secrets/kyufu.json ]; then
  password=$(hex 12)
  # The reviewer entry is an argon2id hash made by `kyufu reviewer-entry` (KYUFU_BIN, else the
  # built binary, else the image the compose file builds, kyufu:local).
  kyufu=${KYUFU_BIN:-}
  [ -n "$kyufu" ] || kyufu=$(command -v kyufu || true)
  [ -n "$kyufu" ] || { [ -x ../target/debug/kyufu ] && kyufu=../target/debug/kyufu; } || true
  if [ -n "$kyufu" ]; then
    entry=$(printf '%s\n' "$password" | "$kyufu" reviewer-entry reviewer)
  else
    docker compose -f compose.yaml build review >&2
    entry=$(printf '%s\n' "$password" | docker run --rm -i kyufu:local reviewer-entry reviewer)
  fi
  cat >secrets/kyufu.json <<JSON
{"pass_keys": "k1:$(hex 32)", "identity_secret": "$(hex 32)", "status_secret": "$(hex 32)",
 "reviewers": "$entry", "admin_token": "$(hex 24)"}
JSON
  echo "make-secrets: reviewer login: reviewer / $password (kept nowhere else; change it in secrets/kyufu.json)"
fi
if [ ! -s secrets/minio.env ]; then
  user=kyufu-root; pass=$(hex 20)
  printf 'MINIO_ROOT_USER=%s\nMINIO_ROOT_PASSWORD=%s\n' "$user" "$pass" >secrets/minio.env
  printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$user" "$pass" >secrets/s3.env
fi
[ -s secrets/grafana.env ] || printf 'GF_SECURITY_ADMIN_PASSWORD=%s\n' "$(hex 16)" >secrets/grafana.env
echo "make-secrets: secrets in deploy/secrets/"
