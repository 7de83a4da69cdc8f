"""A straightforward Hire-MLP, written line by line from
``docs/hire_mlp.md`` with the released checkpoints' parameter names.

It is the equivalence oracle of the tests (mmhire's backbone must match it
bit for bit after checkpoint conversion) and the baseline of the benchmark.
It makes no attempt at speed: each step of the note is its own tensor op.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = {
    'tiny': ((2, 2, 4, 2), (64, 128, 320, 512)),
    'small': ((3, 4, 10, 3), (64, 128, 320, 512)),
    'base': ((4, 6, 24, 3), (64, 128, 320, 512)),
    'large': ((4, 6, 24, 3), (96, 192, 384, 768)),
}
REGION_SIZES, SHIFT_SIZES, SHIFT_PERIODS = (4, 3, 3, 2), (2, 2, 1, 1), (2, 2, 3, 2)


class Mlp(nn.Module):

    def __init__(self, dim, hidden, out):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, out, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Hire(nn.Module):

    def __init__(self, dim, p, s):
        super().__init__()
        self.p, self.s = p, s
        self.mlp_h1 = nn.Conv2d(dim * p, dim // 2, 1, bias=False)
        self.mlp_h1_norm = nn.BatchNorm2d(dim // 2)
        self.mlp_h2 = nn.Conv2d(dim // 2, dim * p, 1)
        self.mlp_w1 = nn.Conv2d(dim * p, dim // 2, 1, bias=False)
        self.mlp_w1_norm = nn.BatchNorm2d(dim // 2)
        self.mlp_w2 = nn.Conv2d(dim // 2, dim * p, 1)
        self.mlp_c = nn.Conv2d(dim, dim, 1)
        self.act = nn.ReLU()
        self.reweight = Mlp(dim, dim // 4, dim * 3)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        p, s = self.p, self.s
        pad_h, pad_w = (p - H % p) % p, (p - W % p) % p
        h, w = x.clone(), x.clone()
        if s:
            h = torch.roll(h, s, -2)
            w = torch.roll(w, s, -1)
        h = F.pad(h, (0, 0, 0, pad_h), mode='circular')
        w = F.pad(w, (0, pad_w, 0, 0), mode='circular')
        Hp, Wp = H + pad_h, W + pad_w
        h = h.reshape(B, C, Hp // p, p, W).permute(0, 1, 3, 2, 4).reshape(
            B, C * p, Hp // p, W)
        w = w.reshape(B, C, H, Wp // p, p).permute(0, 1, 4, 2, 3).reshape(
            B, C * p, H, Wp // p)
        h = self.mlp_h2(self.act(self.mlp_h1_norm(self.mlp_h1(h))))
        w = self.mlp_w2(self.act(self.mlp_w1_norm(self.mlp_w1(w))))
        h = h.reshape(B, C, p, Hp // p, W).permute(0, 1, 3, 2, 4).reshape(
            B, C, Hp, W)
        w = w.reshape(B, C, p, H, Wp // p).permute(0, 1, 3, 4, 2).reshape(
            B, C, H, Wp)
        h = torch.narrow(h, 2, 0, H)
        w = torch.narrow(w, 3, 0, W)
        if s:
            h = torch.roll(h, -s, -2)
            w = torch.roll(w, -s, -1)
        c = self.mlp_c(x)
        a = (h + w + c).flatten(2).mean(2).unsqueeze(2).unsqueeze(2)
        a = self.reweight(a).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0)
        a = a.unsqueeze(-1).unsqueeze(-1)
        return self.proj(h * a[0] + w * a[1] + c * a[2])


class Block(nn.Module):

    def __init__(self, dim, p, s):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = Hire(dim, p, s)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, dim * 4, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ConvBN(nn.Module):

    def __init__(self, cin, cout, k, stride, padding):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, k, stride, padding)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.norm(self.proj(x)))


class ReferenceHireMLP(nn.Module):
    """The ImageNet classifier; ``forward_features`` (``dense_maps``) gives
    the four stages. ``arch`` is a released name or (depths, dims)."""

    def __init__(self, arch='small', num_classes=1000):
        super().__init__()
        depths, dims = ARCHS[arch] if isinstance(arch, str) else arch
        self.patch_embed = ConvBN(3, dims[0], 7, 4, 2)
        network = []
        for i in range(4):
            network.append(nn.Sequential(*(
                Block(dims[i], REGION_SIZES[i],
                      (j % SHIFT_PERIODS[i]) * SHIFT_SIZES[i])
                for j in range(depths[i]))))
            if i < 3:
                network.append(ConvBN(dims[i], dims[i + 1], 3, 2, 1))
        self.network = nn.ModuleList(network)
        self.norm = nn.BatchNorm2d(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward_features(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.network):
            x = layer(x)
            if i % 2 == 0:
                outs.append(x)
        return outs

    dense_maps = forward_features

    def forward(self, x):
        x = self.norm(self.forward_features(x)[-1])
        return self.head(x.mean(dim=(2, 3)))
