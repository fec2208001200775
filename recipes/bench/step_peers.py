"""Peer of recipes/bench/step.lua: one HunyuanVideo double-stream block and one single-stream
block written in plain PyTorch (the layout of diffusers' port: bf16 weights, qk RMSNorm, 3D RoPE on
the image tokens, one joint attention over [image, text], gated residuals, GELU-tanh MLPs), timed
on the same GPU in the same run as adaspa's step.

A step is composed as 20 double + 40 single blocks (the blocks are >99% of a step). Attention runs
through PyTorch SDPA, with the cuDNN backend when it takes the call: without a mask (all text
tokens valid, the fastest case) and with the pipeline's boolean text-padding mask (200 of 256 text
tokens valid), which is what diffusers' HunyuanVideo pipeline passes.

Prints lines: PEER <key> <ms per block or s per step> (median of --reps after a warm-up) and NOTE
lines for what could not run. Weights are random (speed only).
"""
import argparse

from peers_common import median_ms, torch_on_gpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=118800, help="image tokens (720p-129f: 118,800)")
    ap.add_argument("--text", type=int, default=256)
    ap.add_argument("--valid_text", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=3072)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--grid", default="33,45,80", help="latent grid t,h,w of the image tokens (for RoPE)")
    a = ap.parse_args()
    torch = torch_on_gpu("step peers")
    if torch is None:
        return
    import torch.nn.functional as F
    dev, dt = "cuda", torch.bfloat16
    C, H = a.hidden, a.heads
    D = C // H
    Si, St = a.tokens, a.text
    g = torch.Generator(device=dev).manual_seed(1)

    def lin(i, o):
        w = torch.randn(o, i, device=dev, dtype=dt, generator=g) * (i ** -0.5)
        b = torch.randn(o, device=dev, dtype=dt, generator=g) * 0.01
        return w, b

    def linear(x, wb):
        return F.linear(x, wb[0], wb[1])

    # 3D RoPE (t, h, w pair split 8/28/28 of the 64 pairs, theta 256), cos/sin per image token
    t_, h_, w_ = (int(v) for v in a.grid.split(","))
    assert t_ * h_ * w_ == Si, "grid must hold the image tokens"

    def axis(n, pairs, d):
        k = torch.arange(pairs, device=dev, dtype=torch.float64)
        f = 256.0 ** (-2 * k / d)
        return torch.arange(n, device=dev, dtype=torch.float64)[:, None] * f[None, :]

    at, ah, aw = axis(t_, 8, 16), axis(h_, 28, 56), axis(w_, 28, 56)
    ang = torch.cat([at[:, None, None, :].expand(t_, h_, w_, 8), ah[None, :, None, :].expand(t_, h_, w_, 28),
                     aw[None, None, :, :].expand(t_, h_, w_, 28)], dim=-1).reshape(Si, 64)
    cos, sin = ang.cos().float(), ang.sin().float()

    def rope(x):  # x [Si, H, D], interleaved pairs
        xf = x.float().reshape(Si, H, 64, 2)
        c, s = cos[:, None, :], sin[:, None, :]
        y = torch.stack([xf[..., 0] * c - xf[..., 1] * s, xf[..., 0] * s + xf[..., 1] * c], dim=-1)
        return y.reshape(Si, H, D).to(dt)

    def rms(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dt) * w

    def ln(x):
        return F.layer_norm(x, (C,), eps=1e-6)

    def mod(x, shift, scale):
        return x * (1 + scale) + shift

    mask = None

    def attend(q, k, v, masked):
        # q, k, v [S, H, D] -> SDPA wants [1, H, S, D]
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        m = mask if masked else None
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        return o.squeeze(0).transpose(0, 1).reshape(-1, C)

    vec = torch.randn(C, device=dev, dtype=dt, generator=g)
    sv = F.silu(vec)
    # double block weights
    dw = {k: lin(*s) for k, s in {
        "img_mod": (C, 6 * C), "txt_mod": (C, 6 * C), "img_qkv": (C, 3 * C), "txt_qkv": (C, 3 * C),
        "img_proj": (C, C), "txt_proj": (C, C), "img_fc1": (C, 4 * C), "img_fc2": (4 * C, C),
        "txt_fc1": (C, 4 * C), "txt_fc2": (4 * C, C)}.items()}
    sw = {k: lin(*s) for k, s in {"mod": (C, 3 * C), "linear1": (C, 3 * C + 4 * C), "linear2": (C + 4 * C, C)}.items()}
    qn = [torch.ones(D, device=dev, dtype=dt) for _ in range(6)]

    def double_block(img, txt, masked):
        im = linear(sv, dw["img_mod"]).chunk(6)
        tm = linear(sv, dw["txt_mod"]).chunk(6)
        iq, ik, iv = linear(mod(ln(img), im[0], im[1]), dw["img_qkv"]).view(Si, 3, H, D).unbind(1)
        tq, tk, tv = linear(mod(ln(txt), tm[0], tm[1]), dw["txt_qkv"]).view(St, 3, H, D).unbind(1)
        iq, ik = rope(rms(iq, qn[0])), rope(rms(ik, qn[1]))
        tq, tk = rms(tq, qn[2]), rms(tk, qn[3])
        o = attend(torch.cat([iq, tq]), torch.cat([ik, tk]), torch.cat([iv, tv]), masked)
        img = img + im[2] * linear(o[:Si], dw["img_proj"])
        txt = txt + tm[2] * linear(o[Si:], dw["txt_proj"])
        img = img + im[5] * linear(F.gelu(linear(mod(ln(img), im[3], im[4]), dw["img_fc1"]), approximate="tanh"),
                                   dw["img_fc2"])
        txt = txt + tm[5] * linear(F.gelu(linear(mod(ln(txt), tm[3], tm[4]), dw["txt_fc1"]), approximate="tanh"),
                                   dw["txt_fc2"])
        return img, txt

    def single_block(x, masked):
        sh, sc, gt = linear(sv, sw["mod"]).chunk(3)
        h1 = linear(mod(ln(x), sh, sc), sw["linear1"])
        qkv, mlp = h1[:, :3 * C], h1[:, 3 * C:]
        q, k, v = qkv.reshape(-1, 3, H, D).unbind(1)
        q, k = rms(q, qn[4]), rms(k, qn[5])
        q = torch.cat([rope(q[:Si]), q[Si:]])
        k = torch.cat([rope(k[:Si]), k[Si:]])
        o = attend(q, k, v, masked)
        return x + gt * linear(torch.cat([o, F.gelu(mlp, approximate="tanh")], dim=1), sw["linear2"])

    img = torch.randn(Si, C, device=dev, dtype=dt, generator=g)
    txt = torch.randn(St, C, device=dev, dtype=dt, generator=g)
    x = torch.cat([img, txt])
    keep = torch.ones(Si + St, dtype=torch.bool, device=dev)
    keep[Si + a.valid_text:] = False
    mask = keep[None, None, None, :]

    def bench(fn):
        return median_ms(torch, fn, a.reps)

    from torch.nn.attention import SDPBackend, sdpa_kernel
    for masked in (False, True):
        tag = "masked" if masked else "nomask"
        for name, backends in (("cudnn", [SDPBackend.CUDNN_ATTENTION]), ("default", None)):
            try:
                if backends:
                    with sdpa_kernel(backends):
                        d = bench(lambda: double_block(img, txt, masked))
                        s = bench(lambda: single_block(x, masked))
                else:
                    d = bench(lambda: double_block(img, txt, masked))
                    s = bench(lambda: single_block(x, masked))
            except Exception as e:  # noqa: BLE001
                print(f"NOTE {name} {tag}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
                continue
            print(f"PEER double_{name}_{tag} {d:.1f}")
            print(f"PEER single_{name}_{tag} {s:.1f}")
            print(f"PEER step_{name}_{tag} {(20 * d + 40 * s) / 1000:.2f}")
    print(f"NOTE torch {torch.__version__}, peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
