# Turn worker/queue/lua/*.lua into C arrays (generated/qscripts_lua.h), so the Lua
# stays readable Lua in the tree and ships inside the binary.
# Usage: cmake -DSRC=<dir> -DOUT=<file> [-DNAMES=a;b] -P embed.cmake
if(DEFINED NAMES)
  set(names ${NAMES})
else()
  set(names prelude start finish renew progress handback promote retire userlock)
endif()
set(text "/* generated from ${SRC} by embed.cmake: do not edit */\n")
foreach(n ${names})
  file(READ "${SRC}/${n}.lua" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND text "static const char lua_${n}[] = {${bytes}0x00};\n")
endforeach()
file(WRITE "${OUT}.tmp" "${text}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
