#!/bin/sh
# Runs the busted specs once per Lua ABI given (default: 5.4 luajit), then
# prints one closing line: "specs: N passed, N failed".
# USERLIST_SPEC=spec/providers/helicone runs one folder (or a list of files
# and folders, separated by spaces) instead of all of spec/ (spec/unit too).
# The specs of spec/unit need no network: USERLIST_SPEC=spec/unit runs them
# alone (make check-unit). Every other one runs against the emulator whose
# address is in USERLIST_EMU_HTTP (spec/emulator/run exec sets it), and
# spec/20 and spec/providers/*/openapi_spec.lua through Prism too
# (spec/prism/run exec).
# USERLIST_BUILD=build/asan loads the core from another build tree, and
# USERLIST_WRAP="valgrind ..." runs busted under a wrapper (make check-mem).
set -u
cd "$(dirname "$0")/.." || exit 1
# All of them: the providers' folders first, then spec/*_spec.lua, then
# spec/unit. Their million-user listings bound how far the heap grows past
# what is alive when they start, and busted keeps what every file before
# them built: run early, that is little on every ABI (after the numbered
# files, LuaJIT's collector paced Openlayer's on some 11 MB and it went
# past its bound half the time).
specs=${USERLIST_SPEC:-"spec/providers $(ls spec/*_spec.lua | tr '\n' ' ')spec/unit"}
for f in $specs; do
  case $f in spec/unit | spec/unit/*) ;;
    *) [ -n "${USERLIST_EMU_HTTP:-}" ] || { echo "USERLIST_EMU_HTTP unset: $f needs the emulator;" \
         "run it under spec/emulator/run exec (make check, make test) or USERLIST_SPEC=spec/unit" >&2; exit 2; } ;;
  esac
done
[ $# -gt 0 ] || set -- 5.4 luajit
passed=0 failed=0 status=0
for abi in "$@"; do
  case $abi in
    luajit) lua=luajit v=5.1 ;;
    *) lua=lua$abi v=$abi ;;
  esac
  # No ./?.lua entries: the specs load lua/ and build/<abi>/ only, as an
  # installed rock would, never the repo-root dev tree.
  LUA_PATH="spec/?.lua;lua/?.lua;lua/?/init.lua;/usr/local/share/lua/$v/?.lua;/usr/local/share/lua/$v/?/init.lua;/usr/share/lua/$v/?.lua;/usr/share/lua/$v/?/init.lua"
  LUA_CPATH="${USERLIST_BUILD:-build}/$abi/?.so;/usr/local/lib/lua/$v/?.so;/usr/lib/x86_64-linux-gnu/lua/$v/?.so;/usr/lib/lua/$v/?.so"
  USERLIST_LUA=$lua
  export LUA_PATH LUA_CPATH USERLIST_LUA
  echo "== busted on $($lua -v 2>&1 | head -1)"
  out=$(mktemp)
  # busted's own status (or the wrapper's: valgrind, ASan) survives the pipe
  { ${USERLIST_WRAP:-} $lua /usr/bin/busted --run="$abi" -o utfTerminal $specs; \
    echo $? >"$out.rc"; } 2>&1 | tee "$out"
  if [ "$(cat "$out.rc")" != 0 ]; then
    echo "busted on $abi exited with status $(cat "$out.rc")" >&2; status=1
  fi
  rc=$(grep -E '^[0-9]+ success' "$out" | tail -1)
  s=$(echo "$rc" | sed -n 's/^\([0-9]*\) success.*/\1/p')
  f=$(echo "$rc" | sed -n 's/.* \([0-9]*\) failure.*/\1/p')
  e=$(echo "$rc" | sed -n 's/.* \([0-9]*\) error.*/\1/p')
  if [ -z "$s" ]; then
    echo "busted on $abi produced no summary" >&2; status=1; failed=$((failed + 1))
  else
    passed=$((passed + s)); failed=$((failed + f + e))
    [ $((f + e)) -eq 0 ] || status=1
    [ "$s" -gt 0 ] || { echo "busted on $abi ran no test" >&2; status=1; }
  fi
  rm -f "$out" "$out.rc"
done
echo "specs: $passed passed, $failed failed"
exit $status
