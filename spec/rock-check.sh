#!/bin/sh
# The LuaRocks checks (make install-check; `make rock` runs only `pack`):
#   pack   build/rock/userlist-<v>-1.src.rock from the working tree, offline:
#          what `luarocks pack` makes of the rockspec's git source (the
#          rockspec and the sources under userlist/), without the clone.
#   check  (default) `luarocks lint`; `luarocks make --deps-mode=none` into a
#          temporary tree for Lua 5.4, Lua 5.1 and LuaJIT from a copy of the
#          sources, checking the headers and interpreter LuaRocks chose; then,
#          from /tmp, `require "userlist"` and the installed `userlist`
#          command against the emulator (USERLIST_EMU_HTTP: run it under
#          spec/emulator/run exec); and the source rock built with
#          `luarocks build` into another tree. Nothing is downloaded.
# LuaJIT: Debian's LuaRocks finds lua5.1 for --lua-version 5.1; LuaJIT (ABI
# 5.1) is named by a config file (lua_interpreter, LUA_INCDIR), as a user
# would with `luarocks config`.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' userlist-*.rockspec)
rockspec=userlist-$version.rockspec
work=$(mktemp -d "${TMPDIR:-/tmp}/userlist-rock.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
checks=0
ok() { checks=$((checks + 1)); echo "rock-check: ok: $*"; }
fail() { echo "rock-check: FAILED: $*" >&2; exit 1; }

# The files of the working tree that git would hold (tracked and new, not ignored).
stage() {
  mkdir -p "$1"
  git ls-files -co --exclude-standard | while read -r f; do [ -e "$f" ] && echo "$f"; done |
    tar -cf - -T - | tar -C "$1" -xf -
}

pack() {
  rm -rf build/rock
  mkdir -p build/rock
  stage build/rock/userlist
  rm -f build/rock/userlist/.gitignore
  cp "$rockspec" build/rock/
  (cd build/rock && zip -qr "userlist-$version.src.rock" "$rockspec" userlist)
  rm -rf build/rock/userlist "build/rock/$rockspec"
  echo "rock-check: packed build/rock/userlist-$version.src.rock"
}

# install ABI TREE: luarocks make from a copy of the sources into TREE
install() {
  abi=$1 tree=$2
  src="$work/src-$abi"
  stage "$src"
  case $abi in
    luajit) v=5.1 lua=luajit inc=/usr/include/luajit-2.1
      printf '%s\n' '-- LuaRocks for LuaJIT (ABI 5.1): its interpreter and headers' \
        'lua_interpreter = "luajit"' \
        'variables = { LUA_BINDIR = "/usr/bin", LUA_INCDIR = "/usr/include/luajit-2.1" }' \
        >"$work/luajit-config.lua"
      LUAROCKS_CONFIG="$work/luajit-config.lua"; export LUAROCKS_CONFIG ;;
    *) v=$abi lua=lua$abi inc=/usr/include/lua$abi; unset LUAROCKS_CONFIG ;;
  esac
  got=$(luarocks --lua-version "$v" config variables.LUA_INCDIR)
  [ "$got" = "$inc" ] || fail "$abi: LuaRocks uses the headers in $got, not $inc"
  got=$(luarocks --lua-version "$v" config lua_interpreter)
  [ "$got" = "$lua" ] || fail "$abi: LuaRocks runs $got, not $lua"
  (cd "$src" && luarocks --tree "$tree" --lua-version "$v" make --deps-mode=none "$rockspec") \
    >"$work/make-$abi.log" 2>&1 || { cat "$work/make-$abi.log"; fail "$abi: luarocks make"; }
  grep -q -- "-I$inc" "$work/make-$abi.log" || fail "$abi: not compiled against $inc"
  ok "$abi: luarocks make --deps-mode=none (headers $inc, interpreter $lua)"
}

# use ABI TREE: the installed module and command, from outside the repo
use() {
  abi=$1 tree=$2
  case $abi in luajit) v=5.1 lua=luajit ;; *) v=$abi lua=lua$abi ;; esac
  [ "$abi" = luajit ] && LUAROCKS_CONFIG="$work/luajit-config.lua" && export LUAROCKS_CONFIG
  paths=$(luarocks --tree "$tree" --lua-version "$v" path)
  unset LUAROCKS_CONFIG
  (
    eval "$paths"
    cd /tmp
    where=$($lua -e '
      local u = require "userlist"
      assert(u.helicone and u.version, "no userlist module")
      local function search(name, path) -- package.searchpath, which 5.1 lacks
        for t in path:gmatch("[^;]+") do
          local f = t:gsub("%?", (name:gsub("%.", "/")))
          local h = io.open(f)
          if h then h:close() return f end
        end
      end
      print(search("userlist", package.path) .. " " .. search("userlist.core", package.cpath)
        .. " " .. u.core.version)')
    # the version the rockspec's defines gave the core is the rockspec's own
    case $where in "$tree/share/lua/$v/userlist/init.lua $tree/lib/lua/$v/userlist/core.so ${version%-*}") ;;
      *) fail "$abi: require loads $where, not the tree's core of version ${version%-*}" ;; esac
    head -5 "$tree/bin/userlist" | grep -q "/$lua'" || fail "$abi: bin/userlist does not run $lua"
    out=$(HELICONE_API_KEY=sk-helicone-emu "$tree/bin/userlist" helicone --base-url "$USERLIST_EMU_HTTP" \
      --limit 3 --max-pages 1 --format csv --fields id,requests)
    [ "$out" = "$(printf 'id,requests\nuser-0000001,2\nuser-0000002,4\nuser-0000003,9')" ] ||
      fail "$abi: the installed command printed: $out"
    set +e
    "$tree/bin/userlist" helicone --bogus >/dev/null 2>&1; rc=$?
    set -e
    [ $rc = 2 ] || fail "$abi: a usage error exited $rc, not 2"
  )
  ok "$abi: require \"userlist\" and the userlist command from /tmp, against the emulator"
}

case ${1:-check} in
  pack) pack; exit 0 ;;
  check) ;;
  *) echo "usage: $0 [pack|check]" >&2; exit 2 ;;
esac
[ -n "${USERLIST_EMU_HTTP:-}" ] || fail "USERLIST_EMU_HTTP unset: run it under spec/emulator/run exec"

lint=$(luarocks lint "$rockspec" 2>&1) || { echo "$lint"; fail "luarocks lint"; }
[ -z "$lint" ] || { echo "$lint"; fail "luarocks lint printed warnings"; }
ok "luarocks lint $rockspec"
# every C file and Lua module of the tree is in the rockspec (a file the
# Makefile builds but the rock leaves out only shows up as a missing symbol)
for f in csrc/*.c $(find lua/userlist -name '*.lua' | sort); do
  grep -q "\"$f\"" "$rockspec" || fail "$f is not in $rockspec"
done
ok "rockspec lists every csrc/*.c and every .lua under lua/userlist"

for abi in 5.4 5.1 luajit; do
  install "$abi" "$work/tree-$abi"
  use "$abi" "$work/tree-$abi"
done

pack
rock="$root/build/rock/userlist-$version.src.rock"
unzip -l "$rock" | grep -q " userlist/csrc/session.c$" || fail "the source rock lacks the C sources"
unzip -l "$rock" | grep -q " $rockspec$" || fail "the source rock lacks the rockspec"
(cd "$work" && luarocks --tree "$work/tree-srcrock" --lua-version 5.4 build --deps-mode=none "$rock") \
  >"$work/build-srcrock.log" 2>&1 || { cat "$work/build-srcrock.log"; fail "luarocks build of the source rock"; }
use 5.4 "$work/tree-srcrock"
ok "make rock: $(basename "$rock") builds with luarocks build --deps-mode=none"
echo "rock-check: all $checks checks passed"
