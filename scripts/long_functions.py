#!/usr/bin/env python3
"""The longest functions of host/src outside test modules: `python3 scripts/long_functions.py [N]`
prints the N longest (default 30) as `lines file function`."""
import re,sys,os
res=[]
for root,_,files in os.walk('host/src'):
    for f in files:
        if not f.endswith('.rs'): continue
        p=os.path.join(root,f); lines=open(p).read().split('\n')
        # cut tests module
        end=len(lines)
        for i,l in enumerate(lines):
            if l.startswith('#[cfg(test)]'): end=i;break
        i=0
        while i<end:
            m=re.match(r'^(\s*)(pub(\([a-z]+\))? )?(async )?fn (\w+)',lines[i])
            if m:
                ind=len(m.group(1)); j=i
                # find opening brace line then matching close at same indent
                while j<end and not lines[j].rstrip().endswith('{') and not lines[j].rstrip().endswith(';'): j+=1
                if j<end and lines[j].rstrip().endswith(';'): i=j+1; continue
                k=j+1
                while k<end and not (lines[k].startswith(' '*ind+'}') and len(lines[k])-len(lines[k].lstrip())==ind): k+=1
                res.append((k-i+1,p,m.group(5)))
            i+=1
res.sort(reverse=True)
for r in res[:int(sys.argv[1]) if len(sys.argv)>1 else 30]: print(*r)
