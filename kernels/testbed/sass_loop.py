#!/usr/bin/env python3
"""sass_loop.py: the tile loop of each sm90 attention kernel instantiation, counted in SASS.

Reads `cuobjdump -sass` output of a cubin of kernels/attention_sm90.cu and, for each kernel whose
mangled name contains FILTER, finds the key-tile loop (the shortest long backward branch whose body
holds HGMMA), then prints: its instructions, those in the mass flush (the forward-branch region
holding the warpgroup BAR.SYNC, run once every 4 tiles) and in the O rescale (the region of 64
FMUL, run only when a row max moved), a per-tile estimate (loop - flush - rescale + flush / 4),
the opcode counts that told the fused pass from dense in the tenth session, and the instruction
gaps between consecutive HGMMAs (1 when ptxas keeps every descriptor in uniform registers).

    nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Ikernels -Iruntime -cubin \\
         -o /tmp/a.cubin kernels/attention_sm90.cu
    cuobjdump -sass /tmp/a.cubin > /tmp/a.sass       # cuobjdump: CUDA toolkit or the PyPI wheel
    python3 kernels/testbed/sass_loop.py /tmp/a.sass bfloat16Li1ELi3ELb0   # fused, st3, bf16 out

Kernel names: attn_sm90_kernel<OutT, KIND, ST, PP, SYNC>, KIND 0 dense/sparse-128, 1 fused
(mass blocks of 64), 2 sparse-64, 3 fused (mass blocks of 128); e.g. `Li0ELi3ELb0ELi4E` is the
dense walk (3 stages, no ping-pong, barrier every 4). Since the eleventh session the fused pass
has no flush in its loop (reducer warps sum the mass), so its flush count reads 0.
Static counts only: a guide for what to time, not a timing.
"""
import re
import sys

OPS = ["HGMMA", "MUFU", "FFMA", "FADD", "FMUL", "FSEL", "SHFL", "IMAD", "ISETP", "UMOV", "UIADD3", "R2UR",
       "LD", "LDS", "STS", "BAR"]


def functions(text):
    for fn in re.split(r"\n\s*Function : ", text)[1:]:
        name = fn.split("\n", 1)[0].strip()
        ins = []
        for line in fn.split("\n"):
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
            if m:
                ins.append((int(m.group(1), 16), m.group(2)))
        yield name, ins


def opcode(s):
    return re.sub(r"^@!?U?P\w+\s+", "", s).split()[0].split(".")[0]


def tile_loop(ins):
    best = None
    for a, t in ins:
        m = re.search(r"BRA (0x[0-9a-f]+)", t)
        if m:
            tg = int(m.group(1), 16)
            if tg < a and a - tg > 0x1000:
                body = [x for x in ins if tg <= x[0] <= a]
                if any("HGMMA" in s for _, s in body) and (best is None or len(body) < len(best)):
                    best = body
    return best


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip())
        print("\nusage: sass_loop.py SASS_FILE [FILTER]")
        return 2
    text = open(argv[1]).read()
    flt = argv[2] if len(argv) > 2 else ""
    for name, ins in functions(text):
        if flt not in name or "attn_sm90_kernel" not in name:
            continue
        body = tile_loop(ins)
        if not body:
            continue
        last = body[-1][0]
        regions = []
        for a, s in body:
            m = re.search(r"BRA (0x[0-9a-f]+)", s)
            if m and s.startswith("@"):
                tg = int(m.group(1), 16)
                if a < tg <= last:
                    regions.append((a, tg))
        bars = [a for a, s in body if "BAR.SYNC" in s]
        flush = [r for r in regions if any(r[0] < b < r[1] for b in bars)]
        flush = max(flush, key=lambda r: r[1] - r[0]) if flush else None
        resc = [r for r in regions if sum(1 for a, s in body if r[0] < a < r[1] and s.startswith("FMUL")) >= 60]
        resc = min(resc, key=lambda r: r[1] - r[0]) if resc else None
        inside = lambda r: sum(1 for a, _ in body if r and r[0] < a < r[1])
        n, nf, nr = len(body), inside(flush), inside(resc)
        counts = {}
        for _, s in body:
            counts[opcode(s)] = counts.get(opcode(s), 0) + 1
        idx = [i for i, (_, s) in enumerate(body) if "HGMMA" in s]
        short = re.sub(r"^.*attn_sm90_kernel", "", name)
        print(f"{short}\n  loop {n}, flush {nf}, rescale {nr}: per tile ~{n - nf - nr + nf / 4:.0f}")
        print("  " + " ".join(f"{k} {counts.get(k, 0)}" for k in OPS))
        print("  HGMMA gaps " + " ".join(str(idx[i + 1] - idx[i]) for i in range(len(idx) - 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
