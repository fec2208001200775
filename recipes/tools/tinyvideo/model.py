"""The three trained parts of the tiny video model, written so that adaspa can run them:

- TextEncoder: word embedding + learned positions + pre-LN transformer layers -> states [L, D]
  (rows past the caption are zero) and a pooled vector (Linear of the mean of the caption's states).
- AutoEncoder: 8x space, 4x time, `channels` latent channels. The encoder (PyTorch only) is a
  small conv net; the decoder works on latent tokens with linears only: lin_in, `mix` blocks (a
  7-tap cross over (t, h, w) neighbours: one Linear per tap, zero padded), MLP blocks, lin_out to
  4 x 8 x 8 x 3 pixels per token. A clip of F = 4k + 1 frames is encoded after repeating frame 0
  three times in front; the decoder drops those three frames again.
- DiT: HunyuanVideo's transformer (the math of lua/adaspa/models/hunyuan.lua) at a small size,
  with the original checkpoint's parameter names.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def attention(q, k, v, valid):
    """q, k, v [B, S, H, D]; valid [B] keys kept per batch row (the first `valid`)."""
    B, S = k.shape[0], k.shape[1]
    keep = torch.arange(S, device=q.device).view(1, S) < valid.view(B, 1)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=keep.view(B, 1, 1, S))
    return o.transpose(1, 2)


# ---- text encoder ----------------------------------------------------------------------------------

class TextEncoder(nn.Module):
    def __init__(self, vocab_size, dim=128, layers=2, heads=2, max_len=24, pooled_dim=128):
        super().__init__()
        self.dim, self.heads, self.max_len = dim, heads, max_len
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(nn.ModuleDict({
                "norm1": nn.LayerNorm(dim, eps=EPS), "qkv": nn.Linear(dim, 3 * dim), "proj": nn.Linear(dim, dim),
                "norm2": nn.LayerNorm(dim, eps=EPS), "fc1": nn.Linear(dim, 4 * dim), "fc2": nn.Linear(4 * dim, dim)}))
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.pool = nn.Linear(dim, pooled_dim)

    def forward(self, ids, valid):
        """ids [B, L] (padded anyhow), valid [B] -> states [B, L, D] (zero past valid), pooled [B, P]."""
        B, L = ids.shape
        H = self.heads
        x = self.embed(ids) + self.pos[:L]
        for b in self.blocks:
            q, k, v = b["qkv"](b["norm1"](x)).view(B, L, 3, H, self.dim // H).unbind(2)
            x = x + b["proj"](attention(q, k, v, valid).reshape(B, L, self.dim))
            x = x + b["fc2"](gelu_tanh(b["fc1"](b["norm2"](x))))
        keep = (torch.arange(L, device=ids.device).view(1, L) < valid.view(B, 1)).unsqueeze(-1).to(x.dtype)
        x = self.norm(x) * keep
        pooled = self.pool(x.sum(1) / valid.view(B, 1).to(x.dtype))
        return x, pooled


# ---- autoencoder -----------------------------------------------------------------------------------

TAPS = [(0, 0, 0), (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]   # (dt, dh, dw) read offsets


def shift(x, dt, dh, dw):
    """x [B, T, H, W, D]: out[t, h, w] = x[t + dt, h + dh, w + dw] (zero outside)."""
    out = torch.zeros_like(x)
    T, H, W = x.shape[1:4]

    def rng(d, n):
        return (slice(max(0, -d), n - max(0, d)), slice(max(0, d), n - max(0, -d)))
    (ot, it), (oh, ih), (ow, iw) = rng(dt, T), rng(dh, H), rng(dw, W)
    out[:, ot, oh, ow] = x[:, it, ih, iw]
    return out


class Encoder(nn.Module):
    def __init__(self, channels=16, dim=128):
        super().__init__()
        self.patch = nn.Conv3d(3, dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))
        self.res = nn.ModuleList([nn.Conv3d(dim, dim, 3, padding=1) for _ in range(4)])
        self.out = nn.Conv3d(dim, channels, 1)

    def forward(self, video):   # [B, 3, F, H, W] -> [B, C, (F+3)/4, H/8, W/8]
        x = torch.cat([video[:, :, :1].expand(-1, -1, 3, -1, -1), video], 2)
        h = self.patch(x)
        for i in range(0, len(self.res), 2):
            h = h + self.res[i + 1](F.silu(self.res[i](F.silu(h))))
        return self.out(F.silu(h))


class Decoder(nn.Module):
    def __init__(self, channels=16, dim=128, mix=2, mlp=2):
        super().__init__()
        self.channels, self.dim = channels, dim
        self.lin_in = nn.Linear(channels, dim)
        self.mix = nn.ModuleList()
        for _ in range(mix):
            self.mix.append(nn.ModuleDict({"norm": nn.LayerNorm(dim, eps=EPS),
                                           "taps": nn.ModuleList([nn.Linear(dim, dim, bias=(i == 0)) for i in range(7)])}))
        self.mlp = nn.ModuleList()
        for _ in range(mlp):
            self.mlp.append(nn.ModuleDict({"norm": nn.LayerNorm(dim, eps=EPS), "fc1": nn.Linear(dim, 2 * dim),
                                           "fc2": nn.Linear(2 * dim, dim)}))
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.lin_out = nn.Linear(dim, 4 * 8 * 8 * 3)
        # latent normalization (model space -> decoder space), folded into lin_in on export
        self.register_buffer("lat_mean", torch.zeros(channels))
        self.register_buffer("lat_std", torch.ones(channels))

    def forward(self, z):
        """z [B, C, T, h, w] in model space (normalized) -> video [B, 3, 4T - 3, 8h, 8w]."""
        B, C, T, h, w = z.shape
        z = z * self.lat_std.view(1, C, 1, 1, 1) + self.lat_mean.view(1, C, 1, 1, 1)
        x = self.lin_in(z.permute(0, 2, 3, 4, 1))                  # [B, T, h, w, D]
        for m in self.mix:
            y = gelu_tanh(m["norm"](x))
            acc = 0
            for tap, lin in zip(TAPS, m["taps"]):
                acc = acc + shift(lin(y), *tap)
            x = x + acc
        for m in self.mlp:
            x = x + m["fc2"](gelu_tanh(m["fc1"](m["norm"](x))))
        p = self.lin_out(self.norm(x))                             # [B, T, h, w, 4*8*8*3] as (f, py, px, c)
        p = p.view(B, T, h, w, 4, 8, 8, 3).permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(B, 3, 4 * T, 8 * h, 8 * w)
        return p[:, :, 3:]


class AutoEncoder(nn.Module):
    def __init__(self, channels=16, enc_dim=128, dec_dim=128, dec_mix=2, dec_mlp=2):
        super().__init__()
        self.encoder = Encoder(channels, enc_dim)
        self.decoder = Decoder(channels, dec_dim, dec_mix, dec_mlp)

    def encode(self, video):   # model space
        z = self.encoder(video)
        d = self.decoder
        return (z - d.lat_mean.view(1, -1, 1, 1, 1)) / d.lat_std.view(1, -1, 1, 1, 1)


# ---- DiT (HunyuanVideo) --------------------------------------------------------------------------

def timestep_embedding(t, dim=256, max_period=10000.0):
    half = dim // 2
    k = torch.arange(half, dtype=torch.float64, device=t.device)
    a = t.to(torch.float64).view(-1, 1) * torch.exp(-math.log(max_period) * k / half).view(1, -1)
    return torch.cat([torch.cos(a), torch.sin(a)], 1).float()


_ROPE_CACHE = {}


def rope_tables(grid, axes, theta, device):
    """cos, sin [n, D/2] for the tokens of grid (t-major, then h, then w); pairs t, h, w. Made once
    per (grid, axes, theta, device): training calls this every step, and a fresh table would be a
    host-to-device copy (a wait for the device) each time."""
    key = (tuple(grid), tuple(axes), float(theta), str(torch.device(device)))
    if key not in _ROPE_CACHE:
        _ROPE_CACHE[key] = _rope_tables(grid, axes, theta, device)
    return _ROPE_CACHE[key]


def _rope_tables(grid, axes, theta, device):
    T, H, W = grid
    pos = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij"), -1).view(-1, 3)
    angles = []
    for a, d in enumerate(axes):
        k = torch.arange(d // 2, dtype=torch.float64)
        angles.append(pos[:, a:a + 1].double() * theta ** (-2.0 * k / d))
    ang = torch.cat(angles, 1)
    return torch.cos(ang).float().to(device), torch.sin(ang).float().to(device)


def rope(x, cos, sin):
    """x [B, n, H, D]: interleaved pairs rotated."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos.view(1, cos.shape[0], 1, -1), sin.view(1, sin.shape[0], 1, -1)
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1).flatten(-2)


class RMS(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight


def ln(x):
    return F.layer_norm(x, x.shape[-1:], eps=EPS)


def mlp2(a, b):
    return nn.ModuleDict({"0": a, "2": b})


class DiT(nn.Module):
    """Parameter names follow HunyuanVideo's original checkpoint (hy.weight_shapes)."""

    def __init__(self, cfg, zero_init=True):
        """zero_init: gates, the output layer and the guidance embedder's output start at zero (the
        guidance one stays frozen: the model is not guidance-distilled). The smoke run turns it off
        so that an untrained export still carries signal through every path."""
        super().__init__()
        self.cfg = cfg
        h, C, mlp = cfg["hidden"], cfg["in_channels"], cfg["hidden"] * cfg["mlp_ratio"]
        L = nn.Linear
        self.img_in = nn.ModuleDict({"proj": nn.Conv3d(C, h, (1, 2, 2), (1, 2, 2))})
        self.time_in = nn.ModuleDict({"mlp": mlp2(L(256, h), L(h, h))})
        self.guidance_in = nn.ModuleDict({"mlp": mlp2(L(256, h), L(h, h))})
        self.vector_in = nn.ModuleDict({"in_layer": L(cfg["pooled_dim"], h), "out_layer": L(h, h)})
        td = cfg["text_dim"]
        self.txt_in = nn.ModuleDict({
            "input_embedder": L(td, h),
            "t_embedder": nn.ModuleDict({"mlp": mlp2(L(256, h), L(h, h))}),
            "c_embedder": nn.ModuleDict({"linear_1": L(td, h), "linear_2": L(h, h)}),
            "individual_token_refiner": nn.ModuleDict({"blocks": nn.ModuleList([nn.ModuleDict({
                "norm1": nn.LayerNorm(h, eps=EPS), "norm2": nn.LayerNorm(h, eps=EPS),
                "self_attn_qkv": L(h, 3 * h), "self_attn_proj": L(h, h),
                "mlp": nn.ModuleDict({"fc1": L(h, mlp), "fc2": L(mlp, h)}),
                "adaLN_modulation": nn.ModuleDict({"1": L(h, 2 * h)})}) for _ in range(cfg["layers"]["refiner"])])})})
        pd = cfg["head_dim"]

        def stream(s):
            return {f"{s}_mod": nn.ModuleDict({"linear": L(h, 6 * h)}), f"{s}_attn_qkv": L(h, 3 * h),
                    f"{s}_attn_q_norm": RMS(pd), f"{s}_attn_k_norm": RMS(pd), f"{s}_attn_proj": L(h, h),
                    f"{s}_mlp": nn.ModuleDict({"fc1": L(h, mlp), "fc2": L(mlp, h)})}
        self.double_blocks = nn.ModuleList([nn.ModuleDict({**stream("img"), **stream("txt")})
                                            for _ in range(cfg["layers"]["double"])])
        self.single_blocks = nn.ModuleList([nn.ModuleDict({
            "linear1": L(h, 3 * h + mlp), "linear2": L(h + mlp, h), "q_norm": RMS(pd), "k_norm": RMS(pd),
            "modulation": nn.ModuleDict({"linear": L(h, 3 * h)})}) for _ in range(cfg["layers"]["single"])])
        self.final_layer = nn.ModuleDict({"linear": L(h, C * 4), "adaLN_modulation": nn.ModuleDict({"1": L(h, 2 * h)})})
        if zero_init:
            self._zero_init()

    def _zero_init_guidance(self):
        g = self.guidance_in["mlp"]["2"]
        with torch.no_grad():
            g.weight.zero_()
            g.bias.zero_()
        g.weight.requires_grad_(False)
        g.bias.requires_grad_(False)

    def _zero_init(self):
        self._zero_init_guidance()
        # adaLN-zero: every gate and the output start at zero
        for b in self.double_blocks:
            for s in ("img", "txt"):
                nn.init.zeros_(b[f"{s}_mod"]["linear"].weight)
                nn.init.zeros_(b[f"{s}_mod"]["linear"].bias)
        for b in self.single_blocks:
            nn.init.zeros_(b["modulation"]["linear"].weight)
            nn.init.zeros_(b["modulation"]["linear"].bias)
        nn.init.zeros_(self.final_layer["linear"].weight)
        nn.init.zeros_(self.final_layer["linear"].bias)

    def split(self, qkv):
        B, S = qkv.shape[:2]
        return qkv.view(B, S, 3, self.cfg["heads"], self.cfg["head_dim"]).unbind(2)

    def forward(self, x, t, states, valid, pooled, guidance):
        """x [B, C, T, H, W]; t [B] (0..1000); states [B, L, text_dim]; valid [B]; pooled [B, P];
        guidance [B] (its embedding is x 1000) -> velocity like x."""
        cfg = self.cfg
        B, C, T, Hl, Wl = x.shape
        grid = (T, Hl // 2, Wl // 2)
        n_img = grid[0] * grid[1] * grid[2]
        L = states.shape[1]
        h = cfg["hidden"]
        temb = timestep_embedding(t).to(x.dtype)
        gemb = timestep_embedding(guidance * 1000).to(x.dtype)

        def m2(d, a, b, v):
            return d[b](F.silu(d[a](v)))
        vec = (m2(self.time_in["mlp"], "0", "2", temb) + m2(self.vector_in, "in_layer", "out_layer", pooled)
               + m2(self.guidance_in["mlp"], "0", "2", gemb))
        vs = F.silu(vec)

        img = self.img_in["proj"](x).flatten(2).transpose(1, 2)     # [B, n_img, h]
        # text refiner
        ti = self.txt_in
        keep = (torch.arange(L, device=x.device).view(1, L) < valid.view(B, 1)).unsqueeze(-1).to(x.dtype)
        mean = (states * keep).sum(1) / valid.view(B, 1).to(x.dtype)
        c = m2(ti["t_embedder"]["mlp"], "0", "2", temb) + m2(ti["c_embedder"], "linear_1", "linear_2", mean)
        cs = F.silu(c)
        txt = ti["input_embedder"](states)
        for b in ti["individual_token_refiner"]["blocks"]:
            g1, g2 = b["adaLN_modulation"]["1"](cs).unsqueeze(1).chunk(2, -1)
            q, k, v = self.split(b["self_attn_qkv"](b["norm1"](txt)))
            txt = txt + g1 * b["self_attn_proj"](attention(q, k, v, valid).reshape(B, L, h))
            txt = txt + g2 * b["mlp"]["fc2"](F.silu(b["mlp"]["fc1"](b["norm2"](txt))))

        cos, sin = rope_tables(grid, cfg["rope_axes"], cfg["rope_theta"], x.device)
        kv_valid = n_img + valid

        def mod(lin, n):
            return lin(vs).unsqueeze(1).chunk(n, -1)

        for b in self.double_blocks:
            im, tm = mod(b["img_mod"]["linear"], 6), mod(b["txt_mod"]["linear"], 6)
            iq, ik, iv = self.split(b["img_attn_qkv"](ln(img) * (1 + im[1]) + im[0]))
            tq, tk, tv = self.split(b["txt_attn_qkv"](ln(txt) * (1 + tm[1]) + tm[0]))
            iq, ik = rope(b["img_attn_q_norm"](iq), cos, sin), rope(b["img_attn_k_norm"](ik), cos, sin)
            tq, tk = b["txt_attn_q_norm"](tq), b["txt_attn_k_norm"](tk)
            a = attention(torch.cat([iq, tq], 1), torch.cat([ik, tk], 1), torch.cat([iv, tv], 1), kv_valid)
            a = a.reshape(B, n_img + L, h)
            img = img + im[2] * b["img_attn_proj"](a[:, :n_img])
            txt = txt + tm[2] * b["txt_attn_proj"](a[:, n_img:])
            img = img + im[5] * b["img_mlp"]["fc2"](gelu_tanh(b["img_mlp"]["fc1"](ln(img) * (1 + im[4]) + im[3])))
            txt = txt + tm[5] * b["txt_mlp"]["fc2"](gelu_tanh(b["txt_mlp"]["fc1"](ln(txt) * (1 + tm[4]) + tm[3])))

        xs = torch.cat([img, txt], 1)
        for b in self.single_blocks:
            m = mod(b["modulation"]["linear"], 3)
            l1 = b["linear1"](ln(xs) * (1 + m[1]) + m[0])
            q, k, v = self.split(l1[..., :3 * h])
            q, k = b["q_norm"](q), b["k_norm"](k)
            q = torch.cat([rope(q[:, :n_img], cos, sin), q[:, n_img:]], 1)
            k = torch.cat([rope(k[:, :n_img], cos, sin), k[:, n_img:]], 1)
            a = attention(q, k, v, kv_valid).reshape(B, n_img + L, h)
            xs = xs + m[2] * b["linear2"](torch.cat([a, gelu_tanh(l1[..., 3 * h:])], -1))

        shift_, scale = mod(self.final_layer["adaLN_modulation"]["1"], 2)
        out = self.final_layer["linear"](ln(xs[:, :n_img]) * (1 + scale) + shift_)   # [B, n, C*4]
        out = out.view(B, T, Hl // 2, Wl // 2, C, 2, 2).permute(0, 4, 1, 2, 5, 3, 6)
        return out.reshape(B, C, T, Hl, Wl)


# ---- export / import -------------------------------------------------------------------------------

def export_tensors(text, ae, dit):
    """name -> tensor (f32, contiguous) in the layout adaspa reads: the DiT under its own names,
    the text encoder under text_encoder., the decoder under decoder. (latent normalization folded
    into decoder.lin_in, so the decoder takes model-space latents)."""
    out = {}
    for k, v in dit.state_dict().items():
        out[k] = v.detach().float().contiguous()
    for k, v in text.state_dict().items():
        out["text_encoder." + k] = v.detach().float().contiguous()
    d = ae.decoder
    for k, v in d.state_dict().items():
        if k in ("lat_mean", "lat_std"):
            continue
        out["decoder." + k] = v.detach().float().contiguous()
    W, b = d.lin_in.weight.detach().float(), d.lin_in.bias.detach().float()
    out["decoder.lin_in.weight"] = (W * d.lat_std.view(1, -1)).contiguous()
    out["decoder.lin_in.bias"] = (b + W @ d.lat_mean).contiguous()
    return out


def ae_sizes(state):
    """{"enc_dim", "dec_dim", "dec_mix", "dec_mlp"}: the sizes of an AutoEncoder state_dict (a
    refit decoder's may differ from train.FULL's)."""
    def count(prefix):
        idx = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
        return max(idx) + 1 if idx else 0
    return {"enc_dim": int(state["encoder.patch.weight"].shape[0]), "dec_dim": int(state["decoder.lin_in.weight"].shape[0]),
            "dec_mix": count("decoder.mix."), "dec_mlp": count("decoder.mlp.")}


def dit_layers(state):
    """{"double": n, "single": m, "refiner": r}: the block counts of a DiT state_dict."""
    def count(prefix):
        idx = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
        return max(idx) + 1 if idx else 0
    return {"double": count("double_blocks."), "single": count("single_blocks."),
            "refiner": count("txt_in.individual_token_refiner.blocks.")}


def _widen_rules(cfg):
    """name suffix -> (the output axis's chunks, the input axis's chunks) of every DiT tensor whose
    axes carry the hidden width h or the MLP's m (None: that axis keeps its size)."""
    h, m = cfg["hidden"], cfg["hidden"] * cfg["mlp_ratio"]
    both, mlp_in, mlp_out = ([h], [h]), ([m], [h]), ([h], [m])
    r = {"img_in.proj": ([h], None), "time_in.mlp.0": ([h], None), "time_in.mlp.2": both,
         "guidance_in.mlp.0": ([h], None), "guidance_in.mlp.2": both,
         "vector_in.in_layer": ([h], None), "vector_in.out_layer": both,
         "txt_in.input_embedder": ([h], None), "txt_in.t_embedder.mlp.0": ([h], None),
         "txt_in.t_embedder.mlp.2": both, "txt_in.c_embedder.linear_1": ([h], None), "txt_in.c_embedder.linear_2": both,
         "final_layer.linear": (None, [h]), "final_layer.adaLN_modulation.1": ([h] * 2, [h])}
    for i in range(cfg["layers"]["refiner"]):
        b = f"txt_in.individual_token_refiner.blocks.{i}."
        r.update({b + "norm1": ([h], None), b + "norm2": ([h], None), b + "self_attn_qkv": ([h] * 3, [h]),
                  b + "self_attn_proj": both, b + "mlp.fc1": mlp_in, b + "mlp.fc2": mlp_out,
                  b + "adaLN_modulation.1": ([h] * 2, [h])})
    for i in range(cfg["layers"]["double"]):
        for st in ("img", "txt"):
            b = f"double_blocks.{i}.{st}_"
            r.update({b + "mod.linear": ([h] * 6, [h]), b + "attn_qkv": ([h] * 3, [h]), b + "attn_proj": both,
                      b + "mlp.fc1": mlp_in, b + "mlp.fc2": mlp_out})
    for i in range(cfg["layers"]["single"]):
        b = f"single_blocks.{i}."
        r.update({b + "linear1": ([h] * 3 + [m], [h]), b + "linear2": ([h], [h, m]), b + "modulation.linear": ([h] * 3, [h])})
    return r


def widen(src, noise=0.01, seed=0):
    """A DiT twice src's width computing what src does: hidden 2h and 2 x heads of the same head_dim
    (the MLP 2m). Every activation of width h becomes [a, a]: an output axis's chunks (q, k, v, the
    modulation's shifts, scales and gates, ...) are each repeated, so heads h0..hk-1 become h0..hk-1,
    h0..hk-1 and a layer norm over [a, a] is the layer norm over a, repeated. An input axis's chunks
    each become [W / 2 + N, W / 2 - N]: the copies of the input are equal, so the output is W a
    exactly, while N (normal, noise x the tensor's standard deviation; zero for a zero tensor) makes
    the two copies' gradients differ, so training can pull them apart. The q/k norms (head_dim) and
    everything outside the DiT keep their sizes. Returns the new DiT (src's device, zero_init off)."""
    cfg = dict(src.cfg, hidden=2 * src.cfg["hidden"], heads=2 * src.cfg["heads"])
    rules = _widen_rules(src.cfg)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in src.state_dict().items():
        base, kind = name.rsplit(".", 1)
        rule = rules.get(base)
        if rule is None:
            if not name.endswith(("q_norm.weight", "k_norm.weight")):
                raise ValueError(f"widen: no rule for {name}")
            out[name] = w.clone()
            continue
        ochunks, ichunks = rule
        if ochunks:
            if sum(ochunks) != w.shape[0]:
                raise ValueError(f"widen: {name}'s rows {w.shape[0]} are not {ochunks}")
            w = torch.cat([c for c in w.split(ochunks, 0) for c in (c, c)], 0)
        if ichunks and kind == "weight":
            if sum(ichunks) != w.shape[1]:
                raise ValueError(f"widen: {name}'s columns {w.shape[1]} are not {ichunks}")
            sd = float(w.float().std()) if w.numel() > 1 else 0.0
            parts = []
            for c in w.split(ichunks, 1):
                n = (torch.randn(c.shape, generator=g) * noise * sd).to(c.dtype).to(c.device)
                parts += [c / 2 + n, c / 2 - n]
            w = torch.cat(parts, 1)
        out[name] = w.contiguous()
    dit = DiT(cfg, zero_init=False).to(next(src.parameters()).device)
    dit.load_state_dict(out)   # checks every shape
    for p_new, p_old in zip(dit.parameters(), src.parameters()):
        p_new.requires_grad_(p_old.requires_grad)
    return dit


def load_grown(dit, src):
    """Loads DiT src's weights into dit, a DiT of the same sizes with as many or more double and
    single blocks: dit's blocks i < len(src's) are src's; the blocks after them keep their init
    but for their modulation linears (img_mod / txt_mod, modulation: weight and bias), set to
    zero. Every residual branch of a block is scaled by a gate taken from that linear's output,
    so a new block is the identity and dit computes what src does. (double, single) added."""
    nd = len(dit.double_blocks) - len(src.double_blocks)
    ns = len(dit.single_blocks) - len(src.single_blocks)
    if nd < 0 or ns < 0:
        raise ValueError(f"load_grown: the DiT has fewer blocks ({len(dit.double_blocks)} double,"
                         f" {len(dit.single_blocks)} single) than the one loaded ({len(src.double_blocks)},"
                         f" {len(src.single_blocks)})")
    own, theirs = dit.state_dict(), src.state_dict()
    new = tuple(f"double_blocks.{i}." for i in range(len(src.double_blocks), len(dit.double_blocks))) + \
        tuple(f"single_blocks.{i}." for i in range(len(src.single_blocks), len(dit.single_blocks)))
    extra = sorted(set(theirs) - set(own)) + sorted(k for k in set(own) - set(theirs) if not k.startswith(new))
    if extra:
        raise ValueError(f"load_grown: the DiTs differ in more than appended blocks ({', '.join(extra[:4])} ...)")
    own.update(theirs)
    dit.load_state_dict(own)   # checks the shapes
    with torch.no_grad():
        for b in list(dit.double_blocks)[len(src.double_blocks):]:
            for s in ("img", "txt"):
                b[f"{s}_mod"]["linear"].weight.zero_()
                b[f"{s}_mod"]["linear"].bias.zero_()
        for b in list(dit.single_blocks)[len(src.single_blocks):]:
            b["modulation"]["linear"].weight.zero_()
            b["modulation"]["linear"].bias.zero_()
    return nd, ns


def load_state(src, who, name=None, map_location="cpu"):
    """A training state (train.py's torch file; a path or a file object named name) read as tensors
    and plain containers only: a pickle that names code is refused, not run. who: the tool, for the
    error (SystemExit) that names the file."""
    try:
        return torch.load(src, map_location=map_location, weights_only=True)
    except Exception as e:
        why = str(e).split(". ")[0].splitlines()[0] if str(e) else ""
        raise SystemExit(f"{who}: {name or src} is not a training state of plain tensors ({type(e).__name__}: {why})")


def dit_gap(a, b, cfg, device, seed=0):
    """max |a(x) - b(x)| of two DiTs of configuration cfg on one random input (a 1-clip batch of
    cfg's video size, random text states with half the text length valid), in f32 on device."""
    g = torch.Generator().manual_seed(seed)
    v = cfg["video"]
    x = torch.randn(1, cfg["in_channels"], (v["frames"] + 3) // 4, v["height"] // 8, v["width"] // 8, generator=g)
    states = torch.randn(1, cfg["text_len"], cfg["text_dim"], generator=g)
    pooled = torch.randn(1, cfg["pooled_dim"], generator=g)
    args = [t.to(device) for t in (x, torch.tensor([500.0]), states, torch.tensor([max(1, cfg["text_len"] // 2)]),
                                   pooled, torch.tensor([6.0]))]
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # f32 as it says (TF32: a
    try:                                                                              # widened DiT 8e-3 apart, H100)
        with torch.no_grad():
            ya, yb = a(*args).float(), b(*args).float()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return float((ya - yb).abs().max()), float(ya.abs().max())


def load_exported(tensors, cfg, vocab_size):
    """(text, decoder, dit) modules in f32 from exported tensors (the decoder with identity
    normalization: the export folded it in)."""
    tc, dc, mc = cfg["text"], cfg["ae"], cfg["dit"]
    text = TextEncoder(vocab_size, tc["dim"], tc["layers"], tc["heads"], tc["max_len"], mc["pooled_dim"])
    dec = Decoder(mc["in_channels"], dc["dec_dim"], dc["dec_mix"], dc["dec_mlp"])
    dit = DiT(mc, zero_init=False)

    def sub(prefix):
        return {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
    text.load_state_dict(sub("text_encoder."))
    ds = sub("decoder.")
    ds["lat_mean"] = torch.zeros(mc["in_channels"])
    ds["lat_std"] = torch.ones(mc["in_channels"])
    dec.load_state_dict(ds)
    dit.load_state_dict({k: v.float() for k, v in tensors.items()
                         if not k.startswith("text_encoder.") and not k.startswith("decoder.")})
    return text.eval(), dec.eval(), dit.eval()
