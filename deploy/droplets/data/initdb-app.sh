#!/bin/sh
# Runs once, when the data volume is new (the image's /docker-entrypoint-initdb.d): the
# app's own user owning the app's own database, and no database open to PUBLIC, so that
# user reaches nothing else. Values from the container's environment (roles/data.yml).
set -eu
psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres \
  -v app_db="$APP_DB" -v app_user="$APP_DB_USER" -v app_password="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE :"app_db" OWNER :"app_user";
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
REVOKE ALL ON DATABASE template1 FROM PUBLIC;
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"app_db" TO :"app_user";
SQL
