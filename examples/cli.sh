#!/bin/sh
# make demo, part two: the userlist command against the bundled emulator
# (spec/emulator/run sets USERLIST_EMU_HTTP; the keys are the emulator's).
# Against the real services: set HELICONE_API_KEY etc. and drop --base-url.
set -eu
: "${USERLIST_EMU_HTTP:?is unset; run it with: make demo}"
cd "$(dirname "$0")/.."
lua=${USERLIST_LUA:-lua5.4}
export HELICONE_API_KEY=sk-helicone-emu OPENLAYER_API_KEY=ol-emu-key ARTHUR_API_KEY=arthur-emu-key \
  USERTOUR_API_KEY=ak_emu
run() {
  printf '\n$ userlist %s\n' "$*" | sed "s|$USERLIST_EMU_HTTP|\$USERLIST_EMU_HTTP|g"
  # the repo's lua/ and the core built by make (the installed command needs neither)
  LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/$lua/?.so;build/${lua#lua}/?.so;;" \
    "$lua" bin/userlist "$@"
}
E=$USERLIST_EMU_HTTP
run helicone --base-url "$E" --sort cost:desc --max-pages 1 --limit 5
run openlayer --base-url "$E/v1" --pipeline-id 3fa85f64-5717-4562-b3fc-2c963f66afa6 \
  --where 'records >= 15' --format csv --fields id,requests,tokens,cost --max-pages 1 --per-page 4
run arthur --base-url "$E" --task-id task-1 --task-id task-2 --per-user --format jsonl \
  --fields id,task_id,tokens --max-pages 1 --page-size 3
run usertour --base-url "$E" --fields id,email,attributes.plan --max-pages 1 --limit 3
run helicone --base-url "$E" --header 'X-Emu-Users: 5000' --top 10 --by cost
