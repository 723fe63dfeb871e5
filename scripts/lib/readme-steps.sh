# A README's shell blocks as the steps of an end-to-end script: sourced, never run directly.
#
# A README whose blocks an e2e script runs says so at its top with
# `<!-- readme-run: runner SCRIPT TAG -->` (scripts/readme-run and the deploy-checks test
# then require every shell block to be a step of SCRIPT or marked skip), and marks each
# block with `<!-- TAG: STEP -->` on the line before its ```sh fence.
#
#   readme_steps_init FILE TAG    the README and its tag, for the calls below
#   readme_block STEP             prints the block of STEP (fails when there is none)
#   readme_step_ran STEP          records that the script ran STEP
#   readme_steps_all_ran          fails naming every step of the README the script never
#                                 ran: a block added to the README without a run fails
#
# The caller defines fail().

# shellcheck shell=bash

README_STEPS_FILE=
README_STEPS_TAG=
README_STEPS_RAN=()

readme_steps_init() { # file tag
  README_STEPS_FILE=$1
  README_STEPS_TAG=$2
  README_STEPS_RAN=()
  [ -r "$README_STEPS_FILE" ] || fail "no README at $README_STEPS_FILE"
}

readme_block() { # step
  local block
  block=$(awk -v marker="<!-- $README_STEPS_TAG: $1 -->" '
    $0 == marker { found = 1; next }
    found == 1 && /^```sh$/ { found = 2; next }
    found == 2 && /^```$/ { exit }
    found == 2 { print }
  ' "$README_STEPS_FILE")
  [ -n "$block" ] || fail "$README_STEPS_FILE has no \`<!-- $README_STEPS_TAG: $1 -->\` block"
  printf '%s\n' "$block"
}

readme_step_ran() { # step
  README_STEPS_RAN+=("$1")
}

readme_steps_all_ran() {
  local step missing=()
  while IFS= read -r step; do
    [[ " ${README_STEPS_RAN[*]} " == *" $step "* ]] || missing+=("$step")
  done < <(sed -n "s/^<!-- $README_STEPS_TAG: \(.*\) -->\$/\1/p" "$README_STEPS_FILE")
  [ ${#missing[@]} -eq 0 ] || fail "$README_STEPS_FILE: steps never run by this script: ${missing[*]}"
}
