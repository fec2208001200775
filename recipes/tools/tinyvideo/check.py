"""The caption check: colour, shape and motion read back from a video's frames.

    colour  the caption colour whose mask (pixels within 0.3 of the colour, RGB in 0..1) is largest
    shape   a template fit on the shape's soft coverage: each pixel near the mask is unmixed into
            background + shape colour (alpha, the share of the shape colour, least squares on the
            two colours), then each of the three shapes is drawn with the coverage's area and
            centroid (a triangle's centroid lies a third of its half-height below its centre) and
            compared with it (mean absolute difference after a 3x3 box blur of both, over the
            coverage's area); the shape with the smallest error summed over the frames is read.
            The earlier reading (the mask's fill of its bounding box: square ~1, circle ~0.79,
            triangle ~0.5) is still reported as `fill` and `fill_shape`: it misread 6 of the 50
            held-out clips once round-tripped through the trained autoencoder (softened edges,
            small shapes drawn in 8x8 blocks), a ceiling of 88% for any model decoded by it
    motion  from the mask's centroid track and area: growing / shrinking (area x1.6 or /1.6),
            left / right / up / down (net shift > 10% of the side), bouncing (vertical range > 10%)
    background  the caption colour nearest the frames' median chroma (each pixel over its largest
            channel: the background covers most pixels, and its colour survives the texture's
            brightness); reported beside the three, not part of the caption's agreement
    objects the number of objects in the caption colour (connected parts of the mask of at least a
            quarter of the largest one's pixels, the median over the frames): a caption asks for
            one. Reported beside the three as `one`, and with them as `strict` (added 2026-12-04:
            with classifier-free guidance at 3 the tiny model often draws the object twice, which
            the three alone do not see)

    python check.py selftest [--n 200] [--base 0] [--heldout] [--size 256] [--frames 33] [--ae STATE]
        agreement on real clips (seeds base .. base+n-1, or --heldout: the 50 held-out prompts'
        clips); --ae STATE: each clip first round-tripped through the autoencoder of a training
        state (a torch file whose "ae" is the AutoEncoder's state_dict, or the first of its
        STATE.part.NN pieces, joined in order): the check's ceiling for a model decoded by it.
        Prints the agreement, the shapes read against the true ones (3x3) and the misses.

A generated video is scored with score(caption, frames).
"""
import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F_

import data

THRESH = 0.3


def _frames01(frames):
    """[F, H, W, 3] in 0..1 from [3, F, H, W] in -1..1 (a clip) or [F, H, W, 3] in 0..1."""
    if frames.shape[0] == 3 and frames.shape[-1] != 3:
        frames = (frames.permute(1, 2, 3, 0) + 1) / 2
    return frames.float().clamp(0, 1)


def background(v):
    """The background's colour name from [F, H, W, 3] frames in 0..1 (data.render draws it as
    level * (0.85 colour + 0.15): the chroma of 0.85 colour + 0.15 whatever the level)."""
    px = v.reshape(-1, 3)
    med = (px / px.amax(1, keepdim=True).clamp(min=0.05)).median(0).values
    def dist(name):
        c = 0.85 * torch.tensor(data.COLOURS[name]) + 0.15
        return float((c / c.max() - med).norm())
    return min(data.COLOURS, key=dist)


BLUR = 3   # the box blur (pixels) of coverage and templates before they are compared


def coverage(v, colour, bg):
    """Soft coverage of the shape colour [F, H, W] in 0..1: each pixel unmixed as
    beta * background + alpha * colour (least squares; data.render draws the background as
    level * (0.85 bg + 0.15) and blends the shape over it by its coverage); None when the two
    colours cannot be told apart (a white shape read over a white background)."""
    c = torch.tensor(data.COLOURS[colour])
    d = 0.85 * torch.tensor(data.COLOURS[bg]) + 0.15
    basis = torch.stack([d, c], 1)                                # [3, 2]
    if torch.linalg.matrix_rank(basis) < 2 or colour == bg:
        return None
    return (v @ torch.linalg.pinv(basis).T)[..., 1].clamp(0, 1)


def template(shape, area, aspect, mx, my, h, w):
    """Coverage [h, w] of `shape` with the given area and width / height whose centroid is
    (mx, my) (pixels), drawn as data.render draws it (a one-pixel soft edge)."""
    ys = torch.arange(h, dtype=torch.float32).view(h, 1) + 0.5
    xs = torch.arange(w, dtype=torch.float32).view(1, w) + 0.5
    dx, dy = xs - mx, ys - my
    per = {"square": 4.0, "circle": math.pi, "triangle": 2.0}[shape]   # area / (half-width * half-height)
    b = math.sqrt(area / (per * aspect))                               # half-height
    a = aspect * b                                                     # half-width
    if shape == "square":
        sd = torch.maximum(dx.abs() - a, dy.abs() - b)
    elif shape == "circle":
        sd = (torch.sqrt((dx / a) ** 2 + (dy / b) ** 2) - 1) * math.sqrt(a * b)
    else:                       # apex at the top, base (width 2a) at the bottom: centroid 2/3 of the height down
        top = my - 4 * b / 3
        sd = torch.maximum(torch.maximum(top - ys, ys - (top + 2 * b)),
                           (dx.abs() - a * (ys - top) / (2 * b)) / math.sqrt(1 + (a / (2 * b)) ** 2))
    return (0.5 - sd).clamp(0, 1)


# std(x) / std(y) of each shape over its half-width / half-height
_SPREAD = {"square": 1.0, "circle": 1.0, "triangle": math.sqrt(1 / 6) / math.sqrt(2 / 9)}


def part_ids(mask):
    """[F, H, W] float: each mask pixel's connected part (a label > 0; 0 off the mask), the parts
    found on a grid of 4x4-pixel cells (a cell is on when any of its pixels is; cells 8-connected),
    so that a speckled shape stays one part."""
    Fn, H, W = mask.shape
    Hc, Wc = -(-H // 4), -(-W // 4)
    m = F_.max_pool2d(F_.pad(mask.float(), (0, 4 * Wc - W, 0, 4 * Hc - H)).unsqueeze(1), 4) > 0   # [F, 1, Hc, Wc]
    ids = torch.arange(1, Fn * Hc * Wc + 1, dtype=torch.float32).view(Fn, 1, Hc, Wc) * m
    for _ in range(Hc * Wc):
        nxt = F_.max_pool2d(ids, 3, 1, 1) * m
        if torch.equal(nxt, ids):
            break
        ids = nxt
    return ids[:, 0].repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :H, :W] * mask


def count_objects(mask, ok, ids=None):
    """The number of objects: in each frame the mask's connected parts (part_ids, or ids: those of
    mask & ok) of at least a quarter of its largest part's pixels, the median over the frames in ok.
    Real clips read 1 (50 of 50 held-out ones); a model that draws the object twice reads 2."""
    ids = part_ids(mask) if ids is None else ids
    ns = []
    for f in torch.nonzero(ok).flatten().tolist():
        lab = ids[f][mask[f]]
        if lab.numel():
            _, counts = torch.unique(lab, return_counts=True)
            ns.append(int((counts >= 0.25 * counts.max()).sum()))
    return sorted(ns)[len(ns) // 2] if ns else 0


def largest_parts(mask, ids=None):
    """[F, H, W] bool: in each frame, the mask's largest connected part (part_ids, or ids when
    already found): the shape reading fits one object."""
    Fn = mask.shape[0]
    ids = part_ids(mask) if ids is None else ids
    out = torch.zeros_like(mask)
    for f in range(Fn):
        lab = ids[f][mask[f]]
        if lab.numel():
            vals, counts = torch.unique(lab, return_counts=True)
            out[f] = (ids[f] == vals[counts.argmax()]) & mask[f]
    return out


def shape_errors(v, mask, ok, colour, bg, ids=None):
    """{shape: error} summed over the frames `ok`: the template fit of each shape on the coverage
    of the mask's largest part, in a window around it (its bounding box grown by half its size,
    at least 8 pixels; the coverage kept within 6 pixels of the part); {} when no frame has a
    coverage to fit. ids: part_ids(mask & ok) when already found."""
    al = coverage(v, colour, bg)
    if al is None:
        al = mask.float()
    part = largest_parts(mask & ok.view(-1, 1, 1), ids)
    near = F_.max_pool2d(part.float().unsqueeze(1), 13, 1, 6)[:, 0] > 0
    al = al * near
    F, H, W = mask.shape
    tot = {s: 0.0 for s in data.SHAPES}
    frames, total = 0, 0.0
    for f in torch.nonzero(ok).flatten().tolist():
        m = part[f]
        ry = torch.nonzero(m.sum(1) >= 2).flatten()
        rx = torch.nonzero(m.sum(0) >= 2).flatten()
        if len(ry) < 2 or len(rx) < 2:
            continue
        y0, y1, x0, x1 = int(ry[0]), int(ry[-1]) + 1, int(rx[0]), int(rx[-1]) + 1
        g = max(8, (y1 - y0) // 2, (x1 - x0) // 2)
        y0, y1, x0, x1 = max(0, y0 - g), min(H, y1 + g), max(0, x0 - g), min(W, x1 + g)
        a = al[f, y0:y1, x0:x1]
        area = float(a.sum())
        if area < 4:
            continue
        h, w = a.shape
        ys = torch.arange(h, dtype=torch.float32).view(h, 1) + 0.5
        xs = torch.arange(w, dtype=torch.float32).view(1, w) + 0.5
        mx, my = float((a * xs).sum()) / area, float((a * ys).sum()) / area
        sx = math.sqrt(max(float((a * (xs - mx) ** 2).sum()) / area, 1e-6))
        sy = math.sqrt(max(float((a * (ys - my) ** 2).sum()) / area, 1e-6))
        blur = lambda t: F_.avg_pool2d(t[None, None], BLUR, 1, BLUR // 2)[0, 0] if BLUR > 1 else t
        ab = blur(a)
        for s in data.SHAPES:
            aspect = min(4.0, max(0.25, sx / sy / _SPREAD[s]))
            tot[s] += float((ab - blur(template(s, area, aspect, mx, my, h, w))).abs().sum())
        frames += 1
        total += area
    return {s: e / total for s, e in tot.items()} if frames else {}


def read(frames):
    """{colour=, shape=, motion=} read from the frames."""
    v = _frames01(frames)
    F, H, W, _ = v.shape
    planes = v.permute(3, 0, 1, 2).contiguous()               # [3, F, H, W]
    best, mask = None, None
    for name, rgb in data.COLOURS.items():
        m = sum((planes[c] - rgb[c]) ** 2 for c in range(3)) < THRESH * THRESH
        if best is None or m.sum() > mask.sum():
            best, mask = name, m
    out = {"colour": best, "shape": None, "motion": None, "background": background(v)}
    area = mask.flatten(1).sum(1).float()                      # [F]
    if area.max() < 0.001 * H * W:
        return out
    ys = torch.arange(H, dtype=torch.float32).view(1, H, 1)
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, W)
    ok = area > 0.25 * area.max()
    mf = mask.float()
    cx = (mf * xs).flatten(1).sum(1) / area.clamp(min=1)
    cy = (mf * ys).flatten(1).sum(1) / area.clamp(min=1)
    def extent(counts):   # [F, N] mask pixels per row (or column) -> extent in rows, ignoring strays
        on = counts >= 2
        n = counts.shape[1]
        ar = torch.arange(n).view(1, n)
        first = torch.where(on, ar, n).amin(1)
        last = torch.where(on, ar, -1).amax(1)
        return (last - first + 1).clamp(min=1).float()
    box = extent(mask.sum(2)) * extent(mask.sum(1))
    fills = (area / box)[ok].tolist()
    fill = sorted(fills)[len(fills) // 2]
    out["fill"] = fill
    out["fill_shape"] = "square" if fill > 0.88 else ("circle" if fill > 0.64 else "triangle")
    ids = part_ids(mask & ok.view(-1, 1, 1))   # the connected parts, once for the shape and the count
    errs = shape_errors(v, mask, ok, best, out["background"], ids)
    out["shape_err"] = errs
    out["shape"] = min(errs, key=errs.get) if errs else out["fill_shape"]
    out["objects"] = count_objects(mask, ok, ids)
    idx = torch.nonzero(ok).flatten()
    k = max(1, min(3, len(idx) // 4))
    first, last = idx[:k], idx[-k:]
    ratio = float(area[last].mean() / area[first].mean())
    dx = float(cx[last].mean() - cx[first].mean()) / W
    dy = float(cy[last].mean() - cy[first].mean()) / H
    yrange = float(cy[idx].max() - cy[idx].min()) / H
    if ratio > 1.6:
        motion = "growing"
    elif ratio < 1 / 1.6:
        motion = "shrinking"
    elif max(abs(dx), abs(dy)) > 0.1:
        motion = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    elif yrange > 0.1:
        motion = "bouncing"
    else:
        motion = None
    out["motion"] = motion
    return out


def parse(caption):
    """The caption's {colour=, shape=, motion=}."""
    words = data.tokenize(caption)
    out = {"colour": None, "shape": None, "motion": None, "background": None}
    for i, w in enumerate(words):
        if w in ("over",):
            # the background's words: over a [texture] colour background
            out["background"] = next((x for x in words[i + 1:] if x in data.COLOURS), None)
            break
        if w in data.COLOURS and out["colour"] is None:
            out["colour"] = w
        elif w in data.SHAPES:
            out["shape"] = w
        elif w in ("bouncing", "growing", "shrinking"):
            out["motion"] = w
        elif w == "moving" and i + 1 < len(words):
            out["motion"] = words[i + 1]
    return out


def score(caption, frames, got=None):
    """{colour=bool, shape=bool, motion=bool, all=bool, background=bool, one=bool, strict=bool,
    read=..., want=...}; all is the object's three (the issue's check), background is apart, one:
    the frames show one object (a caption asks for one), strict: all and one. got: read(frames)
    when already read (then frames is not looked at)."""
    want, got = parse(caption), (got if got is not None else read(frames))
    r = {k: want[k] == got[k] for k in ("colour", "shape", "motion")}
    r["all"] = all(r.values())
    r["one"] = got.get("objects") == 1
    r["strict"] = r["all"] and r["one"]
    r["background"] = want["background"] == got["background"]
    r["read"], r["want"] = got, want
    return r


def read_state(path):
    """A training state (torch file of plain tensors), or the first of its NAME.part.NN pieces: the
    pieces joined in order."""
    import io
    import model as M
    path = Path(path)
    if not path.exists():
        raise SystemExit("check: no autoencoder state at %s" % path)
    stem, _, num = path.name.rpartition(".part.")
    if stem and num.isdigit():
        parts, k = [], int(num)
        while (path.parent / ("%s.part.%0*d" % (stem, len(num), k))).exists():
            parts.append(path.parent / ("%s.part.%0*d" % (stem, len(num), k)))
            k += 1
        raw = io.BytesIO(b"".join(q.read_bytes() for q in parts))
    else:
        raw = io.BytesIO(path.read_bytes())
    return M.load_state(raw, "check", path)


def load_autoencoder(path, st=None):
    """The AutoEncoder of a training state (read_state(path), or st when given, path naming it):
    {"ae": state_dict, ...} or the state_dict itself; the sizes are the state's own (M.ae_sizes: a
    refit decoder's may be larger than train.FULL's)."""
    import model as M
    if st is None:
        st = read_state(path)
    sd = st.get("ae", st) if isinstance(st, dict) else None
    if not isinstance(sd, dict) or not any(k.startswith("encoder.") for k in sd):
        raise SystemExit("check: %s holds no autoencoder state_dict (neither the \"ae\" of a training state nor one"
                         " with encoder.* keys)" % path)
    try:
        z = M.ae_sizes(sd)
        ae = M.AutoEncoder(int(sd["encoder.out.weight"].shape[0]), z["enc_dim"], z["dec_dim"], z["dec_mix"], z["dec_mlp"])
        ae.load_state_dict(sd)
    except (RuntimeError, KeyError) as e:
        raise SystemExit("check: %s is not an autoencoder state train.py reads: %s" % (path, str(e)[:400]))
    return ae.eval()


def selftest(n=200, size=256, frames=33, base=0, heldout=False, ae=None):
    """Agreement on real clips (seeds base.., or the held-out prompts'), each round-tripped through
    the autoencoder `ae` first when given: (rates, misses, confusion) with confusion[true][read]
    the count of clips of each true shape read as each shape, the fill-of-box reading beside
    (confusion_fill, rates["shape_fill"])."""
    agree = {"colour": 0, "shape": 0, "motion": 0, "all": 0, "background": 0, "shape_fill": 0, "one": 0}
    conf = {t: {s: 0 for s in data.SHAPES + [None]} for t in data.SHAPES}
    conf_fill = {t: {s: 0 for s in data.SHAPES + [None]} for t in data.SHAPES}
    misses = []
    seeds = [sd for sd, _ in data.heldout()][:n] if heldout else [base + i for i in range(n)]
    for seed in seeds:
        p = data.sample_params(seed)
        cap = data.caption(p)
        video = data.render(p, size, frames)
        if ae is not None:
            with torch.no_grad():
                video = ae.decoder(ae.encode(video[None]))[0].clamp(-1, 1)
        r = score(cap, video)
        for k in ("colour", "shape", "motion", "all", "background", "one"):
            agree[k] += int(r[k])
        g = r["read"]
        conf[p["shape"]][g["shape"]] += 1
        conf_fill[p["shape"]][g.get("fill_shape")] += 1
        agree["shape_fill"] += int(g.get("fill_shape") == p["shape"])
        # the background read must also tell another colour apart: the caption with a wrong one
        other = next(c for c in data.COLOURS if c not in (p["bg"], p["colour"]))
        wrong = cap.replace(" %s background" % p["bg"], " %s background" % other)
        agree["background"] -= int(wrong == cap or score(wrong, None, got=r["read"])["background"])
        if not r["all"]:
            misses.append((seed, cap, fmt(g)))
    return {k: v / len(seeds) for k, v in agree.items()}, misses, conf, conf_fill


def fmt(g):
    """A reading in one line: colour shape motion, and the shape reading's numbers."""
    err = " ".join("%s %.2f" % (s[:3], e) for s, e in (g.get("shape_err") or {}).items())
    return "%s %s %s (fit error %s; fill %s -> %s)" % (
        g["colour"], g["shape"], g["motion"], err or "-", "%.3f" % g["fill"] if "fill" in g else "-", g.get("fill_shape"))


def confusion_lines(conf):
    heads = data.SHAPES + [None]
    out = ["  %-10s" % "true\\read" + "".join(" %9s" % (h or "none") for h in heads)]
    for t in data.SHAPES:
        out.append("  %-10s" % t + "".join(" %9d" % conf[t][h] for h in heads))
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["selftest"])
    ap.add_argument("--n", type=int, default=None, help="clips (default 200; --heldout: 50)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--base", type=int, default=0, help="first clip seed")
    ap.add_argument("--heldout", action="store_true", help="the held-out prompts' clips instead of seeds base..")
    ap.add_argument("--ae", default=None, metavar="STATE",
                    help="round-trip each clip through this training state's autoencoder before reading it")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    n = a.n if a.n is not None else (data.HELDOUT_COUNT if a.heldout else 200)
    torch.set_num_threads(a.threads)
    ae = load_autoencoder(a.ae) if a.ae else None
    rates, misses, conf, conf_fill = selftest(n, a.size, a.frames, a.base, a.heldout, ae)
    what = ("%d held-out" % n if a.heldout else "%d real" % n) + " clips" + (
        " round-tripped through the autoencoder of %s" % a.ae if ae is not None else "")
    print("agreement on %s (%dx%d, %d frames): colour %.3f shape %.3f motion %.3f all %.3f"
          " (background %.3f; one object %.3f; the fill-of-box shape reading: %.3f)" % (
              what, a.size, a.size, a.frames, rates["colour"], rates["shape"], rates["motion"], rates["all"],
              rates["background"], rates["one"], rates["shape_fill"]))
    print("shapes read (rows: the true shape, columns: the shape read):")
    print("\n".join(confusion_lines(conf)))
    print("the fill-of-box reading on the same clips:")
    print("\n".join(confusion_lines(conf_fill)))
    for m in misses:
        print("  miss: seed %d %r read %s" % m)
    if ae is not None:
        return 0
    return 0 if rates["all"] >= 0.95 and rates["background"] >= 0.95 and rates["one"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
