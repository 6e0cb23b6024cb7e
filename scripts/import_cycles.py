#!/usr/bin/env python3
"""List intra-directory import cycles among host/src modules (`make lint` runs it; exit 1 on a cycle).

For each .rs file (test modules cut off), collect the sibling modules it names via
`super::x`, `crate::<dir>::x` or `self::x` (in mod.rs). Report strongly connected components
of size >= 2 within each directory."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'host/src'
edges = {}
for d, _, files in os.walk(root):
    rel = os.path.relpath(d, root)
    mods = {f[:-3] for f in files if f.endswith('.rs') and f != 'mod.rs'}
    mods |= {x for x in os.listdir(d) if os.path.isdir(os.path.join(d, x))}
    cratepath = 'crate' if rel == '.' else 'crate::' + rel.replace(os.sep, '::')
    # names re-exported by mod.rs, resolved to the module that defines them
    exported = {}
    modrs = os.path.join(d, 'mod.rs')
    if os.path.exists(modrs) and rel != '.':
        mtext = open(modrs).read()
        for m in re.finditer(r'pub use (\w+)::(\{[^}]*\}|[\w*]+);', mtext, re.S):
            src, names = m.group(1), m.group(2).strip('{}')
            for n in names.split(','):
                n = n.strip().split(' as ')[-1].split('::')[-1]
                if n == '*':
                    body = open(os.path.join(d, src + '.rs')).read()
                    for pm in re.finditer(r'^pub (?:const|fn|struct|enum|type|trait|static) (\w+)', body, re.M):
                        exported[pm.group(1)] = src
                elif n:
                    exported[n] = src
    for f in files:
        if not f.endswith('.rs') or f == 'mod.rs':
            continue
        me = f[:-3]
        text = open(os.path.join(d, f)).read()
        cut = re.search(r'^#\[cfg\(test\)\]', text, re.M)
        if cut:
            text = text[:cut.start()]
        # drop comments
        text = '\n'.join(l for l in text.split('\n') if not l.strip().startswith('//'))
        deps = set()
        for m in re.finditer(r'\bsuper::(\w+)', text):
            deps.add(m.group(1))
        for m in re.finditer(re.escape(cratepath) + r'::(\w+)', text):
            deps.add(m.group(1))
        # grouped imports: use super::{a, b::c}
        for m in re.finditer(r'(?:\bsuper|' + re.escape(cratepath) + r')::\{([^}]*)\}', text):
            for part in m.group(1).split(','):
                deps.add(part.strip().split('::')[0])
        deps = {exported.get(x, x) for x in deps}
        deps = {x for x in deps if x in mods and x != me}
        edges[(rel, me)] = deps
# Tarjan per directory
found = 0
bydir = {}
for (rel, me), deps in edges.items():
    bydir.setdefault(rel, {})[me] = deps
for rel, g in sorted(bydir.items()):
    index = {}; low = {}; stack = []; on = set(); sccs = []; i = [0]
    def strong(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in g.get(v, ()):
            if w not in g: continue
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(comp)
    for v in sorted(g):
        if v not in index: strong(v)
    for comp in sccs:
        found += 1
        print(f'{rel}: cycle among {sorted(comp)}')
        for v in sorted(comp):
            print(f'    {v} -> {sorted(x for x in g[v] if x in comp)}')
print(f'{found} cycle(s)')
sys.exit(1 if found else 0)
