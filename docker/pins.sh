#!/usr/bin/env bash
# The image's pins (docker/pins.env, beside this file) as environment variables. Meant to be sourced
# (`. docker/pins.sh`) by the Dockerfile's steps, the install scripts and scripts/rehearse-image.sh, so
# that all of them read one file. A variable that is already set and not empty wins over the file: that is
# how a `docker build --build-arg TORCH_VERSION=...` (declared as ARG without a default, so it is empty
# unless given) or a caller's environment overrides a pin. Run directly, it prints the pins in force.
set -euo pipefail

_pins_file="${PINS_FILE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pins.env}"
while IFS= read -r _pins_line || [ -n "$_pins_line" ]; do
    case "$_pins_line" in '' | '#'*) continue ;; esac
    _pins_key="${_pins_line%%=*}"
    if [[ ! "$_pins_key" =~ ^[A-Z][A-Z0-9_]*$ ]] || [ "$_pins_key" = "$_pins_line" ]; then
        echo "pins.sh: $_pins_file: not a KEY=VALUE line: $_pins_line" >&2
        return 1 2>/dev/null || exit 1
    fi
    if [ -z "${!_pins_key:-}" ]; then
        export "$_pins_key=${_pins_line#*=}"
    else
        export "${_pins_key?}"
    fi
done < "$_pins_file"

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    while IFS= read -r _pins_line; do
        case "$_pins_line" in '' | '#'*) continue ;; esac
        _pins_key="${_pins_line%%=*}"
        echo "$_pins_key=${!_pins_key}"
    done < "$_pins_file"
fi
unset _pins_file _pins_line _pins_key
