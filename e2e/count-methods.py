#!/usr/bin/env python3
"""Methods per type in a Rust source tree: counts `fn` items directly inside `impl X` and
`impl Trait for X` blocks, skipping files with "test" in their name and trailing
`#[cfg(test)] mod tests` blocks. Usage: e2e/count-methods.py server/src/datastore [TOP]
(the architecture figures of server/ARCHITECTURE.md)."""
import re, sys, os, collections
root = sys.argv[1]
counts = collections.Counter(); files = collections.defaultdict(set)
for dp, dn, fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs') or 'test' in f: continue
        p = os.path.join(dp, f)
        src = open(p).read()
        # cut #[cfg(test)] mod tests { ... } at end
        i = src.find('#[cfg(test)]\nmod tests {')
        if i >= 0: src = src[:i]
        lines = src.split('\n'); depth = 0; cur = None; cur_depth = None
        for line in lines:
            m = re.match(r'^impl(?:<[^>]*>)?\s+(?:[\w:<>, ]+\s+for\s+)?([A-Za-z_]\w*)', line)
            if m and depth == 0:
                cur = m.group(1); cur_depth = 0
            if cur and depth == 1 and re.match(r'^\s{4}(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?fn\s', line):
                counts[cur] += 1; files[cur].add(os.path.relpath(p, root))
            depth += line.count('{') - line.count('}')
            if cur and depth == 0 and '}' in line: cur = None
for t, c in counts.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 15):
    print(f"{c:4} {t:24} {len(files[t])} files")
