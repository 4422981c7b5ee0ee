#!/usr/bin/env bash
# The include-circle check (tests/check_includes.py) on a tiny tree of its own
# (tests/data/check-includes): a circle of includes, a circle hidden behind a shared header and
# one through lib's public headers are each named with their reasons and fail the check; a
# directory without a circle passes although it has what must not count (member names, a
# static function named like another file's, a struct tag declared in one file, names in
# strings and comments, a header of another directory). Then the real tree's src/cli and lib,
# which must have no circle.
set -u
SRC=$(cd "${DG_SOURCE_DIR:-$(dirname "$0")/../..}" && pwd)
. "$SRC/tests/lib/tap.sh"
CHECK=$SRC/tests/check_includes.py
FIX=$SRC/tests/data/check-includes

plan 7

# run DIR...: the check's output in $OUT, its exit status in $RC
run() {
  OUT=$(python3 "$CHECK" --root "$FIX" "$@" 2>&1)
  RC=$?
  echo "$OUT"
}

t_include_circle() {
  run src/circle
  [ "$RC" = 1 ] && grep -qx 'CIRCLE  src/circle: 1 circle(s) among a, b' <<<"$OUT" &&
    grep -qx '  a -> b -> a' <<<"$OUT" &&
    grep -q 'a -> b (a.c includes b.h)' <<<"$OUT" && grep -q 'b -> a (b.c includes a.h)' <<<"$OUT"
}
check "a.c includes b.h and b.c includes a.h: a circle, exit 1, both includes named" t_include_circle

t_hidden() {
  run src/hidden
  [ "$RC" = 1 ] && grep -qx '  x -> y -> x' <<<"$OUT" &&
    grep -q 'x -> y (x.c uses y_run of y.c)' <<<"$OUT" &&
    grep -q 'y -> x (y.c uses x_count of x.c)' <<<"$OUT"
}
check "two files using each other through one shared header (one definition after a macro call): a circle, the symbols named" t_hidden

t_clean() {
  run src/clean
  [ "$RC" = 0 ] && [ "$OUT" = 'ok      src/clean: 3 modules, no circle' ]
}
check "member names, an own static, a struct tag, strings, comments, another directory's header: no circle" t_clean

t_lib() {
  run lib
  [ "$RC" = 1 ] && grep -qx '  log -> mem -> log' <<<"$OUT" &&
    grep -q 'log -> mem (log.c includes dirigent/mem.h)' <<<"$OUT"
}
check "lib with its public headers in include/dirigent: the circle through them" t_lib

t_all() {
  run
  [ "$RC" = 1 ] && [ "$(grep -c '^CIRCLE' <<<"$OUT")" = 3 ] &&
    grep -qx 'ok      src/clean: 3 modules, no circle' <<<"$OUT" &&
    [ "$(grep -c '^  [a-z]* -> ' <<<"$OUT")" = 3 ]
}
check "the whole tree: every directory reported, each of the three circles named" t_all

t_usage() {
  run src/nothere
  [ "$RC" = 2 ] && grep -q 'src/nothere: no such directory' <<<"$OUT"
}
check "a directory that does not exist: exit 2 naming it" t_usage

t_real() {
  OUT=$(python3 "$CHECK" src/cli lib 2>&1)
  RC=$?
  echo "$OUT"
  [ "$RC" = 0 ]
}
check "the real src/cli and lib have no circle" t_real

tap_done
