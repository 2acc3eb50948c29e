#!/usr/bin/env bash
# One speed-recipe candidate on the validation split: experiments/search/run_config.sh with
# its logs kept here.
#   experiments/search/speed/run_config.sh ARCH NAME [train flags...]
# Writes experiments/search/speed/ARCH/NAME-sSEED.{log,jsonl}.
export SEARCH_OUT=experiments/search/speed SEARCH_WORKDIR=${SEARCH_WORKDIR:-/tmp/search-speed}
exec "$(dirname "$0")/../run_config.sh" "$@"
