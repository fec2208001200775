"""Evaluates the tiny model as adaspa runs it: the caption check, the policy quality tables and the
attention observations. Every number comes from adaspa runs (build/adaspa); this script only
drives them and reads their outputs (frames with check.py's reader, results.json).

    python evaluate.py caption [--n 50] [--policy adaspa | none] [--sparsity 0.8 | --recall R] [--guidance S] [--rescore]
        each held-out prompt (heldout.txt) run dense and with the policy (one `adaspa recipe
        compare` per prompt, same seed; --policy none: dense only, with a column per attribute),
        the frames read back by check.py: a table of what each prompt asked and what each run
        shows, the % of prompts whose colour, shape and motion all agree with the caption, and
        the % for each attribute apart, and how many runs show one object (check.py's `objects`;
        "xN" in the table when N != 1) and agree strictly (the three and one object); --rescore:
        no runs, the frames an earlier caption run left under --out read again (after a change
        of check.py), its tables written anew; --recall R: the policy run with a recall target
        (attention.recall) instead of the tiers at --sparsity; the recipe's default run
        (recipes/tiny.lua: one pass a step, AdaSpa at recall 0.9 since the thirty-second session) is
        --recall 0.9 (at sparsity 0.7 before it; the default here stays --sparsity 0.8, the runs' before)
    python evaluate.py quality [--n 50] [--sparsities 0.5,0.8,0.9] [--policies dense,adaspa,window,spatial_temporal,estimate]
        AdaSpa and every policy of the zoo (recipes/compare.lua's list, swept over the sparsities)
        against dense on N prompts: latent PSNR, PSNR / SSIM of the decoded frames, caption-check
        agreement, attention FLOPs, density and recall, averaged over the prompts; with
        --rescore --merge DIR,..: the runs of other --out folders of the same prompts, steps and
        seed (other --policies, e.g. a policy added later) join the table, checked to share the
        dense frames; a row over fewer prompts than the table says how many
    python evaluate.py observe
        the attention of the model on a prompt: recipes/tools/probe_attention.lua (top-20% block
        recall per head, its spread, layout Jaccard and LSE change between two steps), then a
        trace of a real sampling run (recipes/tools/record_trace.lua) replayed by `adaspa recipe
        replay` (every policy on the recorded q, k, v; layout and LSE stability across steps)
    python evaluate.py examples [--prompts 1,2,3,4] [--sheet FILE] [--sparsity 0.7 | --recall R] [--guidance S]
        a contact sheet of the policy run on held-out prompts (default the first --n after --skip):
        each prompt's caption with check.py's verdict ([ok], or what it read where it disagrees)
        and 6 frames from the first to the last; models/tiny/examples.png is
        `examples --n 4 --recall 0.9 --sheet models/tiny/examples.png` (the default run)
    python evaluate.py all [--quick]      # caption, quality and observe; --quick: 3 prompts, 20 steps

Common options: --weights FILE (default: the trained export, models/tiny/tiny.safetensors, read
from adaspa itself), --out DIR (default /tmp/tiny_eval), --steps N (sampler steps, default 50),
--seed N, --adaspa PATH (default build/adaspa of this repository), --threads N (OMP_NUM_THREADS),
--jobs N (caption, quality, examples: N prompts at a time, each its own adaspa process; the tables
are the same as one at a time; threads default to the cores over N).
Outputs under --out: one folder per prompt and run kind, and caption.md / quality.md /
quality.json / observe.txt with the tables printed.
"""
import argparse
import json
import re
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE))
import check  # noqa: E402


def heldout(n, skip=0):
    """Held-out prompts skip+1 .. skip+n: [(seed, caption)] (skip splits a long check into parts)."""
    rows = []
    for line in (HERE / "heldout.txt").read_text().splitlines():
        if line.strip():
            seed, cap = line.split("\t", 1)
            rows.append((int(seed), cap.strip()))
    return rows[skip:skip + n]


def default_weights(adaspa):
    out = subprocess.run([adaspa, "-e", 'print(require("adaspa.models.tiny").weights_path())'],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def run(cmd, log, env=None):
    t0 = time.time()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if p.returncode != 0:
        tail = Path(log).read_text().splitlines()[-15:]
        raise SystemExit("evaluate: failed (exit %d): %s\n  log %s:\n    %s" % (
            p.returncode, " ".join(cmd), log, "\n    ".join(tail)))
    return time.time() - t0


def read_frames(folder):
    """[F, H, W, 3] in 0..1 from folder/frame_NNN.png."""
    from PIL import Image
    import numpy as np
    files = sorted(Path(folder).glob("frame_*.png"))
    if not files:
        raise SystemExit("evaluate: no frame_*.png in %s" % folder)
    arr = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return torch.from_numpy(arr).float() / 255.0


def scored_rows(prompt, out_dir, res):
    """The rows of a compare run's results.json (reference first), each with its frames scored."""
    rows = [res["reference"]] + res["runs"]
    for r in rows:
        r["check"] = None if r.get("error") else check.score(prompt, read_frames(out_dir / r["frames_dir"]))
    return rows


def merged(a, prompt, out_dir, res):
    """--merge DIR,..: res with the runs of the same prompt's folder under each DIR (another
    evaluate.py --out of the same command but other --policies) whose label res lacks, their frames
    read where they are. A DIR without that prompt adds nothing; one whose dense frames differ from
    res's (another model, seed, step count or override) is refused."""
    if not a.merge:
        return res
    labels = {r["label"] for r in [res["reference"]] + res["runs"]}
    ref = None
    for d in a.merge.split(","):
        src = Path(d) / out_dir.parent.name / out_dir.name
        if not (src / "results.json").exists():
            continue
        other = json.loads((src / "results.json").read_text())
        if ("prompt=" + prompt) not in other.get("command", ""):
            raise SystemExit("evaluate: --merge: %s did not run %r" % (src, prompt))
        if ref is None:
            ref = read_frames(out_dir / res["reference"]["frames_dir"])
        theirs = read_frames(src / other["reference"]["frames_dir"])
        if theirs.shape != ref.shape or not torch.equal(theirs, ref):
            raise SystemExit("evaluate: --merge: the dense frames of %r in %s differ from those in %s (another model, "
                             "seed, step count or override: only runs of the same command merge)" % (prompt, src, out_dir))
        for r in other["runs"]:
            if r["label"] not in labels:
                labels.add(r["label"])
                r["frames_dir"] = str((src / r["frames_dir"]).resolve())
                res["runs"].append(r)
    return res


def picked(a):
    """The held-out prompts of this run: [(number, seed, caption)], number 1-based; --prompts I,J,..
    (caption, examples) or the --n after --skip."""
    rows = heldout(10 ** 6)
    nums = [int(x) for x in a.prompts.split(",")] if a.prompts else list(range(a.skip + 1, min(a.skip + a.n, len(rows)) + 1))
    return [(k, rows[k - 1][0], rows[k - 1][1]) for k in nums]


def prompt_dir(a, kind, num):
    """The folder of held-out prompt num (1-based): pNN with NN its 0-based number, so parts run
    with --skip (or --prompts) into one --out meet in one table with --rescore."""
    return Path(a.out) / kind / ("p%02d" % (num - 1))


def compare_run(a, prompt, out_dir, policies, sparsities, extra=()):
    """One `adaspa recipe compare` of the tiny model on prompt; returns results.json (rows with
    their frames scored)."""
    out_dir = Path(out_dir)
    if getattr(a, "rescore", False):
        # --rescore: the frames of an earlier run under --out, read again (check.py changed)
        if not (out_dir / "results.json").exists():
            raise SystemExit("evaluate: --rescore: no earlier run at %s (results.json)" % out_dir)
        res = json.loads((out_dir / "results.json").read_text())
        if ("prompt=" + prompt) not in res.get("command", ""):
            raise SystemExit("evaluate: --rescore: %s did not run %r (give the --n / --skip of that run)" % (
                out_dir, prompt))
        return scored_rows(prompt, out_dir, merged(a, prompt, out_dir, res)), 0.0
    if out_dir.exists():
        import shutil
        shutil.rmtree(out_dir)
    cmd = [a.adaspa, "recipe", str(ROOT / "recipes" / "compare.lua"), "model.name=tiny", "model.weights=" + a.weights,
           "prompt=" + prompt, "sampler.shift=nil"] + guidance_args(a) + ["sampler.steps=%d" % a.steps,
           "sampler.seed=%d" % a.seed] + (["policies=" + ",".join(policies)] if policies else []) + [
           "sweep.sparsity={%s}" % ",".join(str(s) for s in sparsities), "output.frames=true", "output.dir=" + str(out_dir),
           "gallery.layers={}"] + list(extra) + video_args(a) + list(a.set)
    env = dict(os.environ)
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    secs = run(cmd, str(out_dir) + ".log", env)
    return scored_rows(prompt, out_dir, json.loads((out_dir / "results.json").read_text())), secs


def runs(a, work):
    """compare_run(a, *w) for each w of work, --jobs at a time (each an adaspa process); yields
    (rows, secs) in work's order, so tables and progress lines read as with --jobs 1. A failed run
    stops the rest (those not started are cancelled)."""
    if a.jobs <= 1 or a.rescore:
        for w in work:
            yield compare_run(a, *w)
        return
    from concurrent.futures import ThreadPoolExecutor
    ex = ThreadPoolExecutor(max_workers=a.jobs)
    try:
        futures = [ex.submit(compare_run, a, *w) for w in work]
        for f in futures:
            yield f.result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def guidance_args(a):
    """--guidance S: classifier-free guidance at scale S (a blank-prompt pass per step); S = 1 and
    no --guidance: one conditional pass (the recipe's guidance_kind=cfg at scale 1 is the same
    velocity at twice the cost)."""
    if a.guidance is None or a.guidance == 1:
        return ["sampler.guidance=nil"]
    return ["sampler.guidance_kind=cfg", "sampler.guidance=%g" % a.guidance]


def guidance_label(a):
    return "no guidance" if a.guidance is None or a.guidance == 1 else "CFG %g" % a.guidance


def video_args(a):
    if not a.video:
        return []
    w, h, f = a.video.split("x")
    return ["video.width=" + w, "video.height=" + h, "video.frames=" + f]


def fmt_read(r):
    """colour shape motion, and "x N" when the frames show N != 1 objects"""
    g = r["read"]
    n = g.get("objects", 1)
    return "%s %s %s%s" % (g["colour"], g["shape"], g["motion"], "" if n == 1 else " x%d" % n)


def cmd_caption(a):
    prompts = picked(a)
    solo = a.policy == "none"
    # --set policies.2.FIELD=V changes the policy run beside dense: its title says so instead of the sparsity
    own = [x[len("policies.2."):] for x in a.set if x.startswith("policies.2.")]
    pol = " and %s at sparsity %g" % (a.policy, a.sparsity) if not own else " and %s with %s" % (a.policy, ", ".join(own))
    lines = ["# caption check: %d held-out prompts, dense%s (%d steps, seed %d, %s)" % (
        len(prompts), "" if solo else pol, a.steps, a.seed,
        guidance_label(a) + "".join(", " + x for x in a.set if not x.startswith("policies.2."))), ""]
    lines += (["| # | prompt | wants | dense reads | colour | shape | motion |", "| --- | --- | --- | --- | --- | --- | --- |"]
              if solo else ["| # | prompt | wants | dense reads | ok | %s reads | ok |" % a.policy,
                            "| --- | --- | --- | --- | --- | --- | --- |"])
    n_dense = n_pol = n_same = 0
    parts = {w: {"colour": 0, "shape": 0, "motion": 0, "background": 0, "one": 0, "strict": 0} for w in ("dense", "policy")}
    t0 = time.time()
    work = [(cap, prompt_dir(a, "caption", num), ["dense"] if solo else ["dense", a.policy], [a.sparsity])
            for num, _, cap in prompts]
    for i, ((num, seed, cap), (rows, secs)) in enumerate(zip(prompts, runs(a, work))):
        d = rows[0]["check"]
        p = d if solo else rows[1]["check"]
        if p is None:
            raise SystemExit("evaluate: the %s run failed on %r: %s" % (a.policy, cap, rows[1]["error"]))
        w = d["want"]
        n_dense += d["all"]
        n_pol += p["all"]
        n_same += all(d["read"][k] == p["read"][k] for k in ("colour", "shape", "motion"))
        for k in ("colour", "shape", "motion", "background", "one", "strict"):
            parts["dense"][k] += d[k]
            parts["policy"][k] += p[k]
        yn = {True: "yes", False: "no"}
        lines.append("| %d | %s | %s %s %s | %s | %s | %s | %s |" % ((num, cap, w["colour"], w["shape"], w["motion"], fmt_read(d))
                     + ((yn[bool(d["colour"])], yn[bool(d["shape"])], yn[bool(d["motion"])]) if solo else
                        (yn[bool(d["all"])], fmt_read(p), yn[bool(p["all"])]))))
        print("caption %2d/%d  %5.1f s  dense %s  %s %s  %s" % (i + 1, len(prompts), secs, "ok " if d["all"] else "NO ",
              a.policy, "ok" if p["all"] else "NO", cap), flush=True)
    n = len(prompts)
    if solo:
        lines += ["", "agreement with the caption (colour, shape and motion all right): dense %d/%d = %.1f%%" % (
            n_dense, n, 100 * n_dense / n),
            "per attribute (dense): colour %.1f%%, shape %.1f%%, motion %.1f%% (background colour %.1f%%); %.0f s in all" % (
            *[100 * parts["dense"][k] / n for k in ("colour", "shape", "motion", "background")], time.time() - t0),
            "one object (a caption asks for one; xN in the table: N objects): dense %d/%d; the three and one object: dense %d/%d = %.1f%%" % (
            parts["dense"]["one"], n, parts["dense"]["strict"], n, 100 * parts["dense"]["strict"] / n)]
    else:
        lines += ["", "agreement with the caption (colour, shape and motion all right): dense %d/%d = %.1f%%, %s %d/%d = %.1f%%" % (
            n_dense, n, 100 * n_dense / n, a.policy, n_pol, n, 100 * n_pol / n),
            "per attribute (dense / %s): colour %.1f%% / %.1f%%, shape %.1f%% / %.1f%%, motion %.1f%% / %.1f%%"
            " (background colour %.1f%% / %.1f%%)" % (
            a.policy, *[100 * parts[w][k] / n for k in ("colour", "shape", "motion", "background") for w in ("dense", "policy")]),
            "the two runs read the same (colour, shape, motion): %d/%d = %.1f%%; %.0f s in all" % (
            n_same, n, 100 * n_same / n, time.time() - t0),
            "one object (a caption asks for one; xN in the table: N objects): dense %d/%d, %s %d/%d; the three and one"
            " object: dense %d/%d = %.1f%%, %s %d/%d = %.1f%%" % (
            parts["dense"]["one"], n, a.policy, parts["policy"]["one"], n, parts["dense"]["strict"], n,
            100 * parts["dense"]["strict"] / n, a.policy, parts["policy"]["strict"], n, 100 * parts["policy"]["strict"] / n)]
    text = "\n".join(lines)
    print(text)
    (Path(a.out) / "caption.md").write_text(text + "\n")
    res = {"prompts": n, "dense": n_dense, "policy": n_pol, "same": n_same, "policy_name": a.policy,
           "dense_strict": parts["dense"]["strict"], "policy_strict": parts["policy"]["strict"],
           "sparsity": a.sparsity, "recall": a.recall, "steps": a.steps, "seed": a.seed, "weights": a.weights, "guidance": a.guidance,
           "dense_parts": parts["dense"], "policy_parts": parts["policy"]}
    (Path(a.out) / "caption.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def cmd_examples(a):
    """A contact sheet of the policy run (the recipe's default: --recall 0.9, one pass) on
    held-out prompts: per prompt its caption, check.py's verdict, and 6 frames evenly spaced from
    the first to the last."""
    from PIL import Image, ImageDraw
    picks = picked(a)
    tile, text_h, cols = 96, 14, 6
    sheet = Image.new("RGB", (cols * tile, len(picks) * (tile + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    lines = []
    work = [(cap, Path(a.out) / "examples" / ("p%02d" % i), ["dense", a.policy], [a.sparsity]) for i, _, cap in picks]
    for k, ((i, _, cap), (rows, secs)) in enumerate(zip(picks, runs(a, work))):
        out_dir = work[k][1]
        r = rows[1]
        if r["check"] is None:
            raise SystemExit("evaluate: the %s run failed on %r: %s" % (a.policy, cap, r["error"]))
        c = r["check"]
        wrong = [str(c["read"][k2]) for k2 in ("colour", "shape", "motion") if not c[k2]]
        if not c["one"]:
            wrong.append("%d objects" % c["read"].get("objects", 0))
        verdict = "ok" if not wrong else "read: " + ", ".join(wrong)
        frames = read_frames(out_dir / r["frames_dir"])
        nf = frames.shape[0]
        y = k * (tile + text_h)
        draw.text((2, y + 1), "%s  [%s]" % (cap, verdict), fill="black")
        for j in range(cols):
            f = round(j * (nf - 1) / (cols - 1))
            img = Image.fromarray((frames[f].clamp(0, 1) * 255).round().byte().numpy()).resize((tile, tile), Image.BILINEAR)
            sheet.paste(img, (j * tile, y + text_h))
        lines.append("%d. %s [%s] (%.0f s)" % (i, cap, verdict, secs))
        print("examples %d/%d  %5.1f s  %s  [%s]" % (k + 1, len(picks), secs, cap, verdict), flush=True)
    path = Path(a.sheet) if a.sheet else Path(a.out) / "examples.png"
    sheet.save(path)
    how = "recall %g" % a.recall if a.recall is not None else "sparsity %g" % a.sparsity
    head = "examples: %s at %s, %s, %d steps, seed %d; frames %s of each run" % (
        a.policy, how, guidance_label(a), a.steps, a.seed,
        ", ".join(str(round(j * (nf - 1) / (cols - 1))) for j in range(cols)))
    print(head + "\n" + "\n".join(lines) + "\nwrote " + str(path))
    return path


def mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def cmd_quality(a):
    prompts = heldout(a.n, a.skip)
    # None: recipes/compare.lua's list (dense, adaspa, adaspa recall 0.9, window, spatial_temporal, estimate)
    policies = a.policies.split(",") if a.policies else None
    agg = {}
    order = []
    t0 = time.time()
    work = [(cap, prompt_dir(a, "quality", a.skip + i + 1), policies, a.sparsities) for i, (_, cap) in enumerate(prompts)]
    for i, ((seed, cap), (rows, secs)) in enumerate(zip(prompts, runs(a, work))):
        print("quality %2d/%d  %5.1f s  %s" % (i + 1, len(prompts), secs, cap), flush=True)
        for r in rows:
            lab = r["label"]
            if lab not in agg:
                agg[lab] = {k: [] for k in ("flops", "density", "recall", "lat_psnr", "lat_ssim", "psnr", "ssim", "check",
                                            "attn_x", "total_x", "error")}
                order.append(lab)
            g = agg[lab]
            if r.get("error"):
                g["error"].append(r["error"])
                continue
            g["flops"].append(r.get("flops_fraction"))
            g["density"].append(r.get("density"))
            g["recall"].append(r.get("recall"))
            inf = float("inf")   # results.json writes an infinite PSNR (identical to dense) as null
            g["lat_psnr"].append(inf if r.get("latent_psnr") is None else r["latent_psnr"])
            g["lat_ssim"].append(r.get("latent_ssim"))
            g["psnr"].append(inf if r.get("preview_psnr") is None else r["preview_psnr"])
            g["ssim"].append(r.get("preview_ssim"))
            g["attn_x"].append(r.get("attention_speedup"))
            g["total_x"].append(r.get("speedup"))
            g["check"].append(1.0 if r["check"]["all"] else 0.0)
    n = len(prompts)

    def f(x, fmt):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt % x

    def count(k):
        """A row's prompt count where it ran on fewer than the table's n (a --merge folder without some)."""
        return "" if k == n else " (%d prompt%s)" % (k, "" if k == 1 else "s")

    def psnr(ref, m, xs):
        """The mean over the prompts whose run differs from dense; inf when none does; (k inf)
        when k prompts gave identical results."""
        if ref:
            return "inf"
        k = sum(1 for x in xs if x is not None and not math.isfinite(x))
        if k == len(xs):
            return "inf"
        return f(m, "%.2f") + (" (%d inf)" % k if k else "")

    lines = ["# AdaSpa and the policy zoo against dense: tiny model, %d prompts, %d steps, seed %d" % (n, a.steps, a.seed), "",
             "means over the prompts; PSNR / SSIM of the latents and of the decoded frames (RGB 0..255) against the dense run "
             "with the same seed; caption: share of prompts whose frames agree with the caption (check.py); "
             "attn x / total x: dense time over the run's (medians per step mode, this machine)", ""]
    if a.jobs > 1 and not a.rescore:
        lines += ["speed columns: %d runs at a time shared this machine (on a GPU each run's device-event timings also "
                  "take in the other runs' kernels): not a speed measurement; time the policies with --jobs 1" % a.jobs, ""]
    lines += ["| run | FLOPs | density | recall | lat PSNR | lat SSIM | frame PSNR | frame SSIM | caption | attn x | total x |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    table = []
    for lab in order:
        g = agg[lab]
        ref = lab == order[0]
        row = {"run": lab, "prompts": len(g["check"]), "failed": len(g["error"]), "flops": mean(g["flops"]),
               "density": mean(g["density"]), "recall": mean(g["recall"]),
               "latent_psnr": None if ref else mean(g["lat_psnr"]), "latent_ssim": mean(g["lat_ssim"]),
               "frame_psnr": None if ref else mean(g["psnr"]), "frame_ssim": mean(g["ssim"]),
               "caption": mean(g["check"]), "attention_speedup": mean(g["attn_x"]), "speedup": mean(g["total_x"]),
               "frames_identical": sum(1 for x in g["psnr"] if x is not None and not math.isfinite(x))}
        table.append(row)
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            lab + (" (%d failed)" % row["failed"] if row["failed"] else "") + count(row["prompts"] + row["failed"]),
            f(100 * row["flops"], "%.1f%%"), f(row["density"], "%.3f"), f(row["recall"], "%.3f"),
            psnr(ref, row["latent_psnr"], g["lat_psnr"]), f(row["latent_ssim"], "%.4f"),
            psnr(ref, row["frame_psnr"], g["psnr"]), f(row["frame_ssim"], "%.4f"), f(100 * row["caption"], "%.0f%%"),
            f(row["attention_speedup"], "%.2f"), f(row["speedup"], "%.2f")))
    lines.append("")
    lines.append("%.0f s in all; per-prompt results: %s/quality/pNN/results.json (frames under frames/NN/)" % (
        time.time() - t0, a.out))
    text = "\n".join(lines)
    print(text)
    (Path(a.out) / "quality.md").write_text(text + "\n")
    (Path(a.out) / "quality.json").write_text(json.dumps({"prompts": [c for _, c in prompts], "steps": a.steps,
                                                          "seed": a.seed, "rows": table}, indent=2) + "\n")
    return table


def cmd_observe(a):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    prompt = heldout(1)[0][1] if not a.prompt else a.prompt
    env = dict(os.environ)
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    log = []
    probe = [a.adaspa, str(ROOT / "recipes/tools/probe_attention.lua"), "weights=" + a.weights, "prompt=" + prompt]
    run(probe, str(out / "probe.log"), env)
    log.append("$ " + " ".join(probe))
    log += (out / "probe.log").read_text().splitlines()
    trace = out / "trace.safetensors"
    steps = sorted({min(s, a.steps - 1) for s in (a.steps // 5 - 1, a.steps // 5, a.steps // 5 + 1, (2 * a.steps) // 5,
                                                  (3 * a.steps) // 5, a.steps - 1)})
    rec = [a.adaspa, str(ROOT / "recipes/tools/record_trace.lua"), str(trace), "weights=" + a.weights, "prompt=" + prompt,
           "sampling=%d" % a.steps, "steps=" + ",".join(str(s) for s in steps), "seed=%d" % a.seed]
    run(rec, str(out / "record.log"), env)
    log += ["", "$ " + " ".join(rec)] + (out / "record.log").read_text().splitlines()[-3:]
    rp = out / "replay"
    if rp.exists():
        import shutil
        shutil.rmtree(rp)
    warm = a.steps // 5
    replay = [a.adaspa, "recipe", "replay", "trace=" + str(trace), "output.dir=" + str(rp), "warmup=%d" % warm,
              "search=%d,%d" % (warm, (3 * a.steps) // 5), "stability.enabled=true"]
    run(replay, str(out / "replay.log"), env)
    log += ["", "$ " + " ".join(replay)] + (rp / "table.txt").read_text().splitlines()
    text = "\n".join(log)
    print(text)
    (out / "observe.txt").write_text(text + "\n")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["caption", "quality", "observe", "examples", "all"])
    ap.add_argument("--n", type=int, default=None, help="prompts (default 50; --quick 3)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="caption, quality: a recipe override for every run (repeatable), e.g. sampler.shift=5")
    ap.add_argument("--skip", type=int, default=0,
                    help="caption, quality: start after the first SKIP held-out prompts (each prompt's folder is pNN,"
                         " NN its 0-based held-out number: parts run into one --out make one table with --rescore)")
    ap.add_argument("--merge", default=None, metavar="DIR,..",
                    help="quality --rescore: add the runs of other --out folders (the same prompts, steps and seed;"
                         " other --policies) to the table, checked to share the dense frames")
    ap.add_argument("--rescore", action="store_true",
                    help="caption, quality, examples: no adaspa runs; read the frames of an earlier run under --out again (same"
                         " --n, --skip, --policy and --sparsity) with the current check.py")
    ap.add_argument("--quick", action="store_true", help="3 prompts, 20 steps")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default 50; --quick 20)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--policy", default="adaspa", help="caption: the sparse policy run beside dense")
    ap.add_argument("--sparsity", type=float, default=0.8, help="caption: its sparsity")
    ap.add_argument("--recall", type=float, default=None, metavar="R",
                    help="caption, examples: the policy run with a recall target R (attention.recall: blocks kept"
                         " per row until their mass reaches R) instead of the tiers at --sparsity; recipes/tiny.lua's"
                         " default run is --recall 0.9")
    ap.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance scale (sampler.guidance_kind=cfg; the unconditional pass on the"
                         " blank prompt); default and 1: none, one pass a step (recipes/tiny.lua's default run)")
    ap.add_argument("--sparsities", default="0.5,0.8,0.9", help="quality: the sweep")
    ap.add_argument("--policies", default=None,
                    help="quality: recipe compare's policies= list instead of recipes/compare.lua's (e.g. "
                         "dense,adaspa,window,spatial_temporal,estimate: all four swept over --sparsities)")
    ap.add_argument("--prompt", default=None, help="observe: the prompt (default the first held-out one)")
    ap.add_argument("--prompts", default=None, metavar="I,J,..",
                    help="caption, examples: the held-out prompts by number (1-based; default the first --n after --skip)")
    ap.add_argument("--sheet", default=None, help="examples: the PNG to write (default OUT/examples.png)")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--video", default=None, help="WxHxF instead of the export's size (e.g. 128x128x17: faster)")
    ap.add_argument("--out", default="/tmp/tiny_eval")
    ap.add_argument("--adaspa", default=str(ROOT / "build" / "adaspa"))
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS of each adaspa run (default: adaspa's own with --jobs 1, else cores / jobs)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="caption, quality, examples: adaspa runs at a time (one prompt each; e.g. --jobs $(nproc)"
                         " --threads 1); tables and progress in prompt order as with 1")
    a = ap.parse_args(argv)
    for x in a.set:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*=", x):
            ap.error("--set %r: give FIELD=VALUE (a recipe field, as on adaspa's command line)" % x)
    a.n = a.n if a.n is not None else (3 if a.quick else 4 if a.cmd == "examples" else 50)
    total = len(heldout(10 ** 6))
    if a.n < 1 or not 0 <= a.skip < total:
        ap.error("--n %d --skip %d: the held-out set has %d prompts; give --n >= 1 and 0 <= --skip < %d"
                 % (a.n, a.skip, total, total))
    if a.prompts is not None:
        if a.cmd not in ("caption", "examples"):
            ap.error("--prompts: for caption and examples only")
        if not re.fullmatch(r"\d+(,\d+)*", a.prompts) or not all(1 <= int(x) <= total for x in a.prompts.split(",")):
            ap.error("--prompts %s: give held-out prompt numbers 1..%d, commas between them" % (a.prompts, total))
    if a.recall is not None:
        if a.cmd not in ("caption", "examples"):
            ap.error("--recall: for caption and examples only (quality: --policies with --set policies.N.recall=R)")
        if not 0 < a.recall <= 1:
            ap.error("--recall %g: give a recall target in (0, 1]" % a.recall)
        a.set.append("policies.2.recall=%g" % a.recall)
    if a.merge is not None and (a.cmd != "quality" or not a.rescore):
        ap.error("--merge: for quality --rescore only (it joins the tables of runs already made)")
    if a.merge is not None and not all(Path(d).is_dir() for d in a.merge.split(",")):
        ap.error("--merge %s: give folders (earlier evaluate.py --out), commas between them" % a.merge)
    if a.jobs < 1 or (a.threads is not None and a.threads < 1):
        ap.error("--jobs %d --threads %s: give 1 or more" % (a.jobs, a.threads))
    if a.jobs > 1 and a.threads is None:
        a.threads = max(1, (os.cpu_count() or 1) // a.jobs)
    a.steps = a.steps if a.steps is not None else (20 if a.quick else 50)
    a.sparsities = [float(x) for x in a.sparsities.split(",")]
    if not Path(a.adaspa).exists():
        raise SystemExit("evaluate: no adaspa binary at %s (make, or --adaspa PATH)" % a.adaspa)
    a.weights = a.weights or default_weights(a.adaspa)
    if not Path(a.weights).exists():
        raise SystemExit("evaluate: no weights at %s (the trained export; --weights FILE for another)" % a.weights)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    what = "one prompt" if a.cmd == "observe" else "%d prompts" % (len(a.prompts.split(",")) if a.prompts else a.n)
    print("evaluate %s: weights %s, %s, %d steps, output %s" % (a.cmd, a.weights, what, a.steps, a.out), flush=True)
    if a.cmd in ("caption", "all"):
        cmd_caption(a)
    if a.cmd in ("quality", "all"):
        cmd_quality(a)
    if a.cmd in ("observe", "all"):
        cmd_observe(a)
    if a.cmd == "examples":
        cmd_examples(a)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
