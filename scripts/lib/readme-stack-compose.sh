# shellcheck shell=bash
# The stack `compose` of scripts/readme-run: the repository's docker-compose.yml on this
# machine, under the README's own names (project `hitscale`, ports 8080, 9000, 9090, 8443).
# A file that needs it carries `<!-- readme-run: stack compose -->`.
#
# A stack file defines stack_prepare (refuse to touch what a user already has; runs before
# the first block) and stack_cleanup (remove what the blocks created; runs at the end,
# also after a failure, with the run's status as $1). It may set BASE (the URL the generic
# checks read) and define checks of its own (check_NAME).

PROJECT=hitscale
BASE=http://127.0.0.1:8080
ADMIN=http://127.0.0.1:9000
compose_env_absent=0
compose_cert_absent=0

stack_prepare() {
  engine_install_tools
  engine_start
  engine_images
  [ -e .env ] && fail ".env exists: the README's commands would use it; move it aside first"
  [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] \
    || fail "a '$PROJECT' compose stack exists (docker compose -p $PROJECT ps -a): the README would replace it"
  [ -e hitscale-cert.pem ] && fail "hitscale-cert.pem exists: the README's HTTPS step would overwrite it; move it aside first"
  local volume port
  for volume in postgres-data prometheus-data tls-cert; do
    docker volume inspect "${PROJECT}_$volume" >/dev/null 2>&1 \
      && fail "the volume ${PROJECT}_$volume exists: the README ends with 'down -v', which would delete it"
  done
  for port in 8080 9000 9090 8443; do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
      fail "something already listens on 127.0.0.1:$port, a port the README opens"
    fi
  done
  compose_env_absent=1
  compose_cert_absent=1
}

stack_cleanup() { # status
  if [ "$stack_touched" = 1 ]; then
    if [ "$1" -ne 0 ]; then
      log "logs of the stack (last 30 lines per service):"
      timeout 30 docker compose -p "$PROJECT" --profile slow logs --no-color --tail 30 >&3
    fi
    log "removing the stack (docker compose down -v)"
    timeout 120 docker compose -p "$PROJECT" --profile loadgen --profile observability --profile slow \
      down -v --remove-orphans --timeout 20 >/dev/null 2>&1
  fi
  # The README writes .env from .env.example; there was none before (checked above).
  [ "$compose_env_absent" = 1 ] && rm -f "$repo/.env"
  # And copies the HTTPS certificate out, where there was none before either.
  [ "$compose_cert_absent" = 1 ] && rm -f "$repo/hitscale-cert.pem"
  engine_stop
}
