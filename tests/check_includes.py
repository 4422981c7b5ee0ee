#!/usr/bin/env python3
"""check_includes.py: no include circles between the files of one directory.

The rule (issue 13, STYLE.md): within one directory, the files' dependencies form no circle;
"a.c includes b.h and b.c includes a.h" is one. A file x.c and its header x.h are one module x.
Module a depends on module b when
  - a file of a has `#include "b.h"` (resolved next to it, within the same directory), or
  - a.c uses a function or global variable that b.c defines (not static): that is what a.c
    includes a header for, and seeing through a header shared by several .c files (cp.h, dp.h,
    cli.h declaring what api.c, scaling.c, main.c... define) is what makes a circle hidden
    behind one visible. Member names (`.x`, `->x`) and a file's own definitions (a static
    function named like another file's) are not uses; a local variable named like another
    file's global is (rename it: the reader would confuse them too).
`#include <...>`, headers of other directories and `main` are not followed. lib/'s public
headers live in include/dirigent/, so lib/ is checked together with them (dirigent/log.h is
module log of lib/).

Usage: check_includes.py [--root DIR] [DIR ...]
  DIR: directories to check, relative to the root (default: every directory under src/ and
  lib/ holding .c or .h files). Prints one line per directory and every circle found, each
  edge with its reason; exits 1 when there is a circle, 2 on a usage error.
"""
import os
import re
import sys

INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.M)
IDENT = re.compile(r'[A-Za-z_]\w*')
KEYWORDS = set('''auto break case char const continue default do double else enum extern float
for goto if inline int long register restrict return short signed sizeof static struct switch
typedef union unsigned void volatile while _Bool _Static_assert bool __attribute__ __typeof__
typeof asm __asm__ __extension__ __inline__ __restrict__ _Thread_local'''.split())
MAX_CYCLES = 40  # per directory; more are counted, not printed


def strip_comments(text):
    """Comments become spaces (newlines kept); strings and character literals stay."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r'[^\n]', ' ', text[i:j]))
            i = j
        elif text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i))
            i = j
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c and text[j] != '\n':
                j += 2 if text[j] == '\\' else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def strip_code(text):
    """Without comments, strings, character literals and preprocessor lines."""
    text = strip_comments(text)
    text = re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', text)
    text = re.sub(r"'(?:[^'\\\n]|\\.)*'", "''", text)
    return re.sub(r'^[ \t]*#(?:[^\n]*\\\n)*[^\n]*', '', text, flags=re.M)


def definitions(code):
    """(public, own): the non-static functions and global variables a .c file defines, and
    every function and global it defines, static ones included."""
    names, own, depth, stmt, i, n = set(), set(), 0, [], 0, len(code)
    skip_to_semicolon = False  # after the braces of an initializer or a type
    while i < n:
        c = code[i]
        if c == '{':
            if depth == 0:
                head = ''.join(stmt)
                words = IDENT.findall(head)
                if '=' in head:  # a variable with an initializer
                    if 'extern' not in words:
                        d = declarators(head.split('=')[0])
                        own.update(d)
                        if 'static' not in words:
                            names.update(d)
                    skip_to_semicolon = True
                elif '(' in head and 'typedef' not in words:  # a function definition
                    m = function_name(head)
                    if m:
                        own.add(m.group(1))
                        if 'static' not in words:
                            names.add(m.group(1))
                else:  # struct/union/enum body (its declarators, if any, are not collected)
                    skip_to_semicolon = True
                stmt = []
            depth += 1
        elif c == '}':
            depth -= 1
            if depth == 0 and not skip_to_semicolon:
                stmt = []
        elif c == ';' and depth == 0:
            head = ''.join(stmt)
            words = IDENT.findall(head)
            if (not skip_to_semicolon and '(' not in head and words and
                    not {'extern', 'typedef'} & set(words)):
                d = declarators(head)
                own.update(d)
                if 'static' not in words:
                    names.update(d)
            stmt, skip_to_semicolon = [], False
        elif depth == 0 and not skip_to_semicolon:
            stmt.append(c)
        i += 1
    names.discard('main')
    return names, own


def function_name(head):
    """The name of a function definition's head: the identifier before its last top-level
    parenthesis (the parameters), so that a macro call before it (an X-macro expanding to
    definitions, `__attribute__((...))`) is not taken for the name."""
    depth, last = 0, -1
    for i, c in enumerate(head):
        if c == '(':
            if depth == 0:
                last = i
            depth += 1
        elif c == ')':
            depth -= 1
    return re.search(r'(\w+)\s*$', head[:last]) if last > 0 else None


def declarators(head):
    """`struct cp cp, *x[3] = {0}` -> {cp, x}: the last identifier before any `=` of each
    comma-separated part; `struct msg;` declares no variable."""
    out = set()
    for n, part in enumerate(head.split(',')):
        part = re.sub(r'\[[^\]]*\]', '', part.split('=')[0])
        words = IDENT.findall(part)
        ids = [w for w in words if w not in KEYWORDS]
        # `struct msg;`: a tag declared, no variable
        if n == 0 and words[:1] and words[0] in ('struct', 'union', 'enum') and len(ids) < 2:
            continue
        if ids:
            out.add(ids[-1])
    return out


def uses(code):
    """Identifiers a file uses, member names (after . or ->) left out."""
    return {m.group(0) for m in IDENT.finditer(code)
            if not re.search(r'(?:\.|->)\s*$', code[max(0, m.start() - 8):m.start()])}


def module(path):
    return os.path.splitext(os.path.basename(path))[0]


def load_dir(root, d):
    """The module graph of directory d: {a: {b: reason}}."""
    full = os.path.join(root, d)
    files = sorted(os.path.join(full, f) for f in os.listdir(full)
                   if f.endswith(('.c', '.h')) and os.path.isfile(os.path.join(full, f)))
    homes = [full]
    if os.path.normpath(d) == 'lib':  # lib's public headers
        pub = os.path.join(root, 'include', 'dirigent')
        if os.path.isdir(pub):
            homes.append(pub)
            files += sorted(os.path.join(pub, f) for f in os.listdir(pub) if f.endswith('.h'))
    graph = {module(f): {} for f in files}
    defined = {}  # symbol -> modules whose .c defines it
    texts, owns = {}, {}
    for f in files:
        with open(f, encoding='utf-8', errors='replace') as fh:
            raw = fh.read()
        texts[f] = strip_code(raw)
        a = module(f)
        for inc in INCLUDE.findall(strip_comments(raw)):
            cands = [os.path.normpath(os.path.join(os.path.dirname(f), inc))]
            if inc.startswith('dirigent/') and len(homes) > 1:
                cands.append(os.path.normpath(os.path.join(root, 'include', inc)))
            for t in cands:
                if os.path.dirname(t) in map(os.path.normpath, homes) and os.path.isfile(t):
                    b = module(t)
                    if b != a:
                        graph[a].setdefault(b, '%s includes %s' % (os.path.basename(f), inc))
                    break
        if f.endswith('.c'):
            public, owns[f] = definitions(texts[f])
            for s in public:
                defined.setdefault(s, set()).add(a)
    for f in files:
        if not f.endswith('.c'):
            continue
        a = module(f)
        for s in sorted(uses(texts[f]) - owns[f]):  # its own statics shadow the others
            for b in sorted(defined.get(s, ())):
                if b != a:
                    graph[a].setdefault(b, '%s uses %s of %s.c' % (os.path.basename(f), s, b))
    return graph


def sccs(graph):
    """Tarjan's strongly connected components with more than one module."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cycles(graph, comp):
    """Every elementary cycle within one component, each started at its smallest module."""
    found = []
    members = set(comp)
    for start in comp:
        allowed = {m for m in members if m >= start}
        path = [start]

        def walk(v):
            for w in sorted(graph[v]):
                if w == start:
                    found.append(path + [start])
                elif w in allowed and w not in path:
                    path.append(w)
                    walk(w)
                    path.pop()
                if len(found) > 10 * MAX_CYCLES:
                    return

        walk(start)
    return found


def check(root, dirs):
    bad = 0
    for d in dirs:
        graph = load_dir(root, d)
        comps = sccs(graph)
        if not comps:
            print('ok      %s: %d modules, no circle' % (d, len(graph)))
            continue
        bad += 1
        found = [c for comp in comps for c in cycles(graph, comp)]
        print('CIRCLE  %s: %d circle(s) among %s' %
              (d, len(found), '; '.join(', '.join(c) for c in comps)))
        for cyc in found[:MAX_CYCLES]:
            steps = ['%s -> %s (%s)' % (a, b, graph[a][b]) for a, b in zip(cyc, cyc[1:])]
            print('  %s\n    %s' % (' -> '.join(cyc), '\n    '.join(steps)))
        if len(found) > MAX_CYCLES:
            print('  ... and %d more' % (len(found) - MAX_CYCLES))
    return 1 if bad else 0


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = argv[1:]
    if args[:1] == ['--root']:
        if len(args) < 2:
            print('check_includes.py: --root needs a directory', file=sys.stderr)
            return 2
        root, args = args[1], args[2:]
    if any(a.startswith('-') for a in args):
        print(__doc__.split('\n\n')[-1], file=sys.stderr)
        return 2
    dirs = args
    if not dirs:
        for top in ('src', 'lib'):
            for dirpath, _, names in sorted(os.walk(os.path.join(root, top))):
                if any(f.endswith(('.c', '.h')) for f in names):
                    dirs.append(os.path.relpath(dirpath, root))
    for d in dirs:
        if not os.path.isdir(os.path.join(root, d)):
            print('check_includes.py: %s: no such directory under %s' % (d, root),
                  file=sys.stderr)
            return 2
    return check(root, sorted(dirs))


if __name__ == '__main__':
    sys.exit(main(sys.argv))
