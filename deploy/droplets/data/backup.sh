#!/bin/sh
# The data role's `backup` service: every night at BACKUP_AT (UTC) a pg_dump of APP_DB into
# /backups (a named volume), the newest BACKUP_KEEP kept. A dump is written to a temporary
# name and renamed when complete, so a half dump never counts as a backup. A failed dump
# leaves /backups/.last-failed until the next one succeeds: the service's health check.
set -eu
mkdir -p /backups
while true; do
  now=$(date -u +%s)
  next=$(date -u -d "today $BACKUP_AT" +%s)
  [ "$next" -gt "$now" ] || next=$(date -u -d "tomorrow $BACKUP_AT" +%s)
  echo "backup: next pg_dump of $APP_DB at $(date -u -d "@$next" '+%Y-%m-%d %H:%M') UTC"
  sleep $((next - now))
  file=/backups/$APP_DB-$(date -u +%Y%m%dT%H%M%SZ).dump
  if pg_dump --format=custom --dbname "$APP_DB" --file "$file.partial"; then
    mv "$file.partial" "$file"
    rm -f /backups/.last-failed
    echo "backup: wrote $file"
    ls -1t /backups/*.dump | tail -n +$((BACKUP_KEEP + 1)) | xargs -r rm -f
  else
    rm -f "$file.partial"
    touch /backups/.last-failed
    echo "backup: pg_dump failed; next try tomorrow" >&2
  fi
done
