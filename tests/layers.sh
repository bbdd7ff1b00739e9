#!/bin/sh
# Checks the direction of the core's layers in the built objects: every
# sl_ symbol an object of a layer uses must be defined in that layer or in
# one below it (base < mech < step < run < surface). The include paths make
# a back-edge through a header a build error; this catches one made with a
# hand-written declaration.
# Usage: layers.sh BUILD_DIR [SUFFIX]
build=$1
sfx=$2
below=""
status=0
defined=$(mktemp)
trap 'rm -f "$defined"' EXIT
for layer in base mech step run surface; do
  objs=$(find "$build/CMakeFiles/sluice_$layer$sfx.dir" -name '*.o')
  if [ -z "$objs" ]; then
    echo "no objects for layer $layer under $build" >&2
    exit 1
  fi
  nm -g --defined-only $objs | awk 'NF == 3 { print $3 }' >> "$defined"
  for o in $objs; do
    for sym in $(nm -u "$o" | awk '{ print $2 }' | grep '^sl_'); do
      if ! grep -qx "$sym" "$defined"; then
        echo "layer $layer: $(basename "$o" .c.o) uses $sym, which no layer at or below $layer defines" >&2
        status=1
      fi
    done
  done
done
[ $status -eq 0 ] && echo "layers: every call goes down"
exit $status
